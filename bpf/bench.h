/* The bench build (-DLBFAST_BENCH, bench/bench_xdp.py only). BPF_PROG_TEST_RUN with
 * repeat > 1 runs the program again on the packet it just rewrote; this build keeps a
 * copy of the first BENCH_BYTES of the first packet it sees (until bench_scratch is
 * cleared) and puts it back after every run, so each run sees the same input and the
 * kernel's per-run figure is the cost of one packet. With -DLBFAST_BENCH_NEW_FLOWS each
 * run first gets its own source port (and, every 16384 runs, the next source address)
 * from a run counter, so each run, across calls too, is a new flow. IPv4 only.
 * -DLBFAST_BENCH_EMPTY measures this scaffolding alone. */
#ifndef LBFAST_BENCH_H
#define LBFAST_BENCH_H

#define BENCH_BYTES 64
#define BENCH_WORDS (BENCH_BYTES / 8)

/* copied a word at a time: a byte array would be copied byte by byte */
struct bench_copy {
    union {
        __u64 words[BENCH_WORDS];
        __u8 bytes[BENCH_BYTES];
    };
    __u64 taken;
    __u64 runs;
};

static __always_inline void copy_words(__u64 *to, const __u64 *from)
{
#pragma unroll
    for (int i = 0; i < BENCH_WORDS; i++)
        to[i] = from[i];
}
BPF_PERCPU_ARRAY(bench_scratch, struct bench_copy, 1);

int lbfast_xdp(struct xdp_md *ctx)
{
    __u32 zero = 0;
    struct bench_copy *copy = bench_scratch.lookup(&zero);
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (!copy || data + BENCH_BYTES > data_end)
        return XDP_ABORTED;
    if (!copy->taken) {
        copy_words(copy->words, data);
        copy->taken = 1;
    }

#ifdef LBFAST_BENCH_NEW_FLOWS
    /* Ethernet 14 + IPv4 20: source address at 26..29, source port at 34 */
    __u64 n = copy->runs++;
    if (data + 36 > data_end)
        return XDP_ABORTED;
    *(__be16 *)(data + 34) = bpf_htons(40000 + (n & 0x3fff));
    *(__u8 *)(data + 29) = copy->bytes[29] + (n >> 14);
#endif
#ifdef LBFAST_BENCH_EMPTY
    int verdict = XDP_PASS;     /* what the copy and restore alone cost */
#else
    int verdict = lbfast(ctx);
#endif

    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    if (data + BENCH_BYTES > data_end)
        return XDP_ABORTED;
    copy_words(data, copy->words);
    return verdict;
}

#endif
