"""Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights: every LB host
builds the same table from the same servers, so a source keeps its server across hosts
and when an unrelated server comes or goes."""
from array import array

from lbfast._maglev import build_table as _build_table_c
from lbfast.hashing import permutation

DEFAULT_SIZE = 16381


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    f = 2
    while f * f <= n:
        if n % f == 0:
            return False
        f += 1
    return True


def _check(keys: list[str], weights: list[int], size: int) -> None:
    if not is_prime(size):
        raise ValueError(f"maglev table size {size} is not a prime")
    if len(keys) != len(weights):
        raise ValueError("keys and weights differ in length")
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate server keys")
    if any(w <= 0 for w in weights):
        raise ValueError("weights must be positive")


def build_table(keys: list[str], weights: list[int], size: int = DEFAULT_SIZE) -> array:
    """Table of `size` slots, each the index of a server in `keys` (-1 when empty)."""
    _check(keys, weights, size)
    return _build_table_c(list(keys), list(weights), size)


def reference_table(keys: list[str], weights: list[int], size: int = DEFAULT_SIZE) -> array:
    """Pure-Python twin of the Cython builder, kept for tests and the micro bench."""
    _check(keys, weights, size)
    table = array("i", [-1]) * size
    if not keys:
        return table
    perms = [permutation(k, size) for k in keys]
    nxt = [0] * len(keys)
    credit = [0] * len(keys)
    max_weight = max(weights)
    filled = 0
    while True:
        for i, (offset, skip) in enumerate(perms):
            credit[i] += weights[i]
            if credit[i] < max_weight:
                continue
            credit[i] -= max_weight
            c = (offset + nxt[i] * skip) % size
            while table[c] >= 0:
                nxt[i] += 1
                c = (offset + nxt[i] * skip) % size
            table[c] = i
            nxt[i] += 1
            filled += 1
            if filled == size:
                return table
