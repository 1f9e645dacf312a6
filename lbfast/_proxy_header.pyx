# cython: language_level=3, boundscheck=False, wraparound=False
"""PROXY protocol v1 and v2 headers (HAProxy's proxy-protocol.txt), written in C: the
first bytes a server reads on a connection opened for a client."""
from libc.string cimport memcpy, memset

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, unsigned int size)
    int AF_INET
    int AF_INET6

cdef bytes V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


cdef int _parse(str address, unsigned char *out16) except -1:
    """Fill out16 with the IPv6 form of `address` (IPv4 as ::ffff:a.b.c.d); return 4 or 6
    for the family the address really belongs to."""
    cdef bytes raw = address.encode("ascii")
    memset(out16, 0, 16)
    if inet_pton(AF_INET, raw, out16 + 12) == 1:
        out16[10] = 0xff
        out16[11] = 0xff
        return 4
    if inet_pton(AF_INET6, raw, out16) == 1:
        if out16[0] == 0 and out16[1] == 0 and out16[2] == 0 and out16[3] == 0 and \
           out16[4] == 0 and out16[5] == 0 and out16[6] == 0 and out16[7] == 0 and \
           out16[8] == 0 and out16[9] == 0 and out16[10] == 0xff and out16[11] == 0xff:
            return 4        # IPv4-mapped (a dual-stack listener): the client is IPv4
        return 6
    raise ValueError(f"not an IP address: {address!r}")


cdef str _text(unsigned char *addr16, int family):
    cdef char buf[64]
    if family == 4:
        inet_ntop(AF_INET, addr16 + 12, buf, sizeof(buf))
    else:
        inet_ntop(AF_INET6, addr16, buf, sizeof(buf))
    return (<bytes>buf).decode("ascii")


def encode_v1(str src, int src_port, str dst, int dst_port):
    """"PROXY TCP4|TCP6 src dst sport dport\\r\\n"; mixed families are sent as TCP6."""
    cdef unsigned char s[16]
    cdef unsigned char d[16]
    cdef int fs = _parse(src, s), fd = _parse(dst, d)
    cdef int fam = 4 if fs == 4 and fd == 4 else 6
    return ("PROXY TCP%d %s %s %d %d\r\n" % (
        fam, _text(s, fam), _text(d, fam), src_port, dst_port)).encode("ascii")


def encode_v2(str src, int src_port, str dst, int dst_port):
    """Binary v2 header, command PROXY over TCP, no TLVs."""
    cdef unsigned char s[16]
    cdef unsigned char d[16]
    cdef unsigned char out[16 + 36]
    cdef int fs = _parse(src, s), fd = _parse(dst, d)
    cdef int n
    memcpy(out, <const char *>V2_SIGNATURE, 12)
    out[12] = 0x21                          # version 2, PROXY
    if fs == 4 and fd == 4:
        out[13] = 0x11                      # TCP over IPv4
        out[14] = 0
        out[15] = 12
        memcpy(out + 16, s + 12, 4)
        memcpy(out + 20, d + 12, 4)
        n = 24
    else:
        out[13] = 0x21                      # TCP over IPv6
        out[14] = 0
        out[15] = 36
        memcpy(out + 16, s, 16)
        memcpy(out + 32, d, 16)
        n = 48
    out[n] = (src_port >> 8) & 0xff
    out[n + 1] = src_port & 0xff
    out[n + 2] = (dst_port >> 8) & 0xff
    out[n + 3] = dst_port & 0xff
    return (<char *>out)[:n + 4]


def encode(int version, str src, int src_port, str dst, int dst_port):
    if version == 1:
        return encode_v1(src, src_port, dst, dst_port)
    if version == 2:
        return encode_v2(src, src_port, dst, dst_port)
    raise ValueError(f"PROXY protocol version {version}")
