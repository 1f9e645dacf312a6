"""Maglev: the Cython builder equals the pure-Python reference slot by slot, weights give
proportional shares, and removing one of N servers moves about 1/N of the table."""
import ipaddress
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from lbfast import maglev
from lbfast.hashing import fmix32, fnv1a64, permutation, source_hash, source_slot

SMALL_PRIMES = [7, 13, 251, 1021, 4093]


def keys(n):
    return [f"10.0.{i // 250}.{i % 250}:80" for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 100])
def test_cython_equals_reference_default_size(n):
    ks, ws = keys(n), [1 + (i * 7) % 5 for i in range(n)]
    assert maglev.build_table(ks, ws) == maglev.reference_table(ks, ws)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 255), min_size=1, max_size=12), st.sampled_from(SMALL_PRIMES))
def test_cython_equals_reference_any_weights(weights, size):
    ks = keys(len(weights))
    assert maglev.build_table(ks, weights, size) == maglev.reference_table(ks, weights, size)


def test_every_slot_filled_and_empty_table():
    table = maglev.build_table(keys(5), [1] * 5)
    assert len(table) == maglev.DEFAULT_SIZE and min(table) == 0 and max(table) == 4
    assert set(maglev.build_table([], [])) == {-1}


def test_equal_weights_share_evenly():
    shares = Counter(maglev.build_table(keys(10), [1] * 10))
    for count in shares.values():
        assert abs(count - maglev.DEFAULT_SIZE / 10) <= 2


def test_weights_give_proportional_shares():
    shares = Counter(maglev.build_table(keys(3), [3, 1, 1]))
    assert shares[0] / shares[1] == pytest.approx(3, rel=0.02)
    assert shares[1] == pytest.approx(shares[2], rel=0.02)


@pytest.mark.parametrize("n", [5, 10, 20])
def test_removing_one_server_moves_about_one_nth(n):
    ks = keys(n)
    before = maglev.build_table(ks, [1] * n)
    removed = ks[n // 2]
    after_keys = [k for k in ks if k != removed]
    after = maglev.build_table(after_keys, [1] * (n - 1))
    moved = sum(1 for a, b in zip(before, after)
                if ks[a] != removed and ks[a] != after_keys[b])
    lost = sum(1 for a in before if ks[a] == removed)
    # Slots of the removed server must move; of the others, Maglev moves only a few.
    assert lost == pytest.approx(len(before) / n, rel=0.05)
    assert moved / len(before) < 0.5 / n


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="not a prime"):
        maglev.build_table(keys(2), [1, 1], 100)
    with pytest.raises(ValueError, match="positive"):
        maglev.build_table(keys(2), [1, 0])
    with pytest.raises(ValueError, match="duplicate"):
        maglev.build_table(["a", "a"], [1, 1])


# Computed once from lbfast/hashing.py and written down: every LB host (and bpf/hashing.h)
# must agree on these bits, so any change to the hash functions must break this test.
SOURCE_HASH_VECTORS = {
    "0.0.0.0": 0xD9AAF7D3,
    "10.0.0.1": 0x7F2AFA06,
    "10.0.0.2": 0xC0A1D8C9,
    "192.0.2.255": 0xFA3F74F3,
    "::1": 0xFAA1DA7A,
    "2001:db8::7": 0xBF56CC74,
}


@pytest.mark.parametrize("ip, expected", SOURCE_HASH_VECTORS.items())
def test_source_hash_vectors(ip, expected):
    assert source_hash(ipaddress.ip_address(ip).packed) == expected


def test_hash_building_blocks_vectors():
    assert fmix32(0) == 0
    assert fmix32(1) == 0x514E28B7           # MurmurHash3's published fmix32(1)
    assert fmix32(0xDEADBEEF) == 0x0DE5C6A9
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"10.0.0.1:80") == 0x529F5A4B643FA605
    assert permutation("10.0.0.1:80", 65537) == (21352, 6278)
    assert permutation("10.0.0.2:80", 13) == (6, 10)


def test_maglev_table_vector():
    table = maglev.build_table(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], [1, 2, 1], 13)
    assert list(table) == [1, 2, 0, 0, 1, 2, 1, 1, 1, 0, 1, 1, 2]


def test_source_slots_spread():
    slots = Counter(source_slot(f"192.0.2.{i}", 7) for i in range(256))
    assert len(slots) == 7 and max(slots.values()) < 60
