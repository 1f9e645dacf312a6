# cython: boundscheck=False, wraparound=False, cdivision=True
"""Maglev lookup-table builder (weighted), the C twin of lbfast.maglev.reference_table."""
from cpython.array cimport array, clone
from libc.stdint cimport int32_t, uint64_t
from libc.stdlib cimport calloc, free

from lbfast.hashing import permutation

cdef array _int_template = array("i")


def build_table(list keys, list weights, Py_ssize_t size):
    """Return an array('i') of `size` server indices; -1 everywhere when `keys` is empty."""
    cdef Py_ssize_t n = len(keys), i, filled = 0
    cdef array table = clone(_int_template, size, False)
    cdef int32_t[:] slots = table
    cdef uint64_t *state
    cdef uint64_t *offset
    cdef uint64_t *skip
    cdef uint64_t *nxt
    cdef uint64_t *credit
    cdef uint64_t *weight
    cdef uint64_t max_weight = 0, c
    for i in range(size):
        slots[i] = -1
    if n == 0:
        return table
    state = <uint64_t *>calloc(5 * n, sizeof(uint64_t))
    if state == NULL:
        raise MemoryError()
    offset, skip, nxt, credit, weight = state, state + n, state + 2 * n, state + 3 * n, state + 4 * n
    try:
        for i in range(n):
            offset[i], skip[i] = permutation(keys[i], size)
            weight[i] = weights[i]
            if weight[i] > max_weight:
                max_weight = weight[i]
        while True:
            for i in range(n):
                # Weighted turns: a server places one entry each time its credit
                # reaches the largest weight, so shares follow the weights.
                credit[i] += weight[i]
                if credit[i] < max_weight:
                    continue
                credit[i] -= max_weight
                c = (offset[i] + nxt[i] * skip[i]) % size
                while slots[c] >= 0:
                    nxt[i] += 1
                    c = (offset[i] + nxt[i] * skip[i]) % size
                slots[c] = i
                nxt[i] += 1
                filled += 1
                if filled == size:
                    return table
    finally:
        free(state)
