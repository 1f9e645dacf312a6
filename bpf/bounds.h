/* Bounds the verifier can see. The compiler drops a check or a mask it proves redundant
 * (idx < len <= size), but the verifier cannot prove that and rejects the access:
 * opaque() hides a value's range from the compiler so the check stays. */
#ifndef LBFAST_BOUNDS_H
#define LBFAST_BOUNDS_H

static __always_inline __u64 opaque(__u64 x)
{
    asm volatile("" : "+r"(x));
    return x;
}

#endif
