"""The hash functions every LB host must agree on: Maglev permutations of server keys and
the source-address hash that picks a table slot. The XDP program (bpf/hashing.h)
implements `source_hash` bit for bit; tests check both against the same vectors."""
import ipaddress

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF
FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
SEED_OFFSET = 0x9E3779B97F4A7C15
SEED_SKIP = 0xC2B2AE3D27D4EB4F
SOURCE_SEED = 0x5BD1E995


def fnv1a64(data: bytes) -> int:
    h = FNV64_OFFSET
    for b in data:
        h = ((h ^ b) * FNV64_PRIME) & MASK64
    return h


def mix64(x: int) -> int:
    """splitmix64 finaliser: spreads FNV's weak low bits over the whole word."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def permutation(key: str, size: int) -> tuple[int, int]:
    """Maglev (offset, skip) of a server key in a table of `size` (a prime)."""
    h = fnv1a64(key.encode())
    return mix64(h ^ SEED_OFFSET) % size, mix64(h ^ SEED_SKIP) % (size - 1) + 1


def fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    return h ^ (h >> 16)


def source_hash(addr: bytes) -> int:
    """32-bit hash of a packed IPv4 (4 bytes) or IPv6 (16 bytes) address, one
    big-endian word at a time."""
    h = SOURCE_SEED
    for i in range(0, len(addr), 4):
        h = fmix32(h ^ int.from_bytes(addr[i:i + 4], "big"))
    return h


def source_slot(ip: str, size: int) -> int:
    return source_hash(ipaddress.ip_address(ip).packed) % size
