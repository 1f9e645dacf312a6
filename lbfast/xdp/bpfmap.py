"""Typed access to one BPF map by fd: ctypes key and value types from structs.py,
per-CPU values as a list, iteration in batches where the kernel supports them."""
import ctypes as ct
import os
from typing import Iterator

from lbfast.xdp import syscall


def possible_cpus() -> int:
    """Per-CPU maps hold one value per *possible* CPU (not online)."""
    return _cpu_count("possible")


def online_cpus() -> int:
    """CPUs that run packets now: each holds its share of a per-CPU LRU."""
    return _cpu_count("online")


def _cpu_count(which: str) -> int:
    text = open(f"/sys/devices/system/cpu/{which}").read().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


class BpfMap:
    def __init__(self, name: str, fd: int, key_type, value_type, percpu: bool = False):
        self.name = name
        self.fd = fd
        self.key_type = key_type
        self.value_type = value_type
        self.percpu = percpu
        self.ncpus = possible_cpus() if percpu else 1
        if percpu:
            # each CPU's value is padded to 8 bytes
            stride = (ct.sizeof(value_type) + 7) // 8 * 8
            self._percpu_buffer = ct.c_uint8 * (stride * self.ncpus)
            self._stride = stride

    def __repr__(self) -> str:
        return f"BpfMap({self.name!r}, fd={self.fd})"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ---- single elements ----
    def get(self, key):
        value = self.value_type()
        return value if syscall.lookup(self.fd, key, value) else None

    def set(self, key, value, flags: int = syscall.BPF_ANY) -> None:
        syscall.update(self.fd, key, value, flags)

    def delete(self, key) -> bool:
        return syscall.delete(self.fd, key)

    def get_percpu(self, key) -> list:
        buf = self._percpu_buffer()
        if not syscall.lookup(self.fd, key, buf):
            return []
        return [self.value_type.from_buffer_copy(bytes(buf), i * self._stride)
                for i in range(self.ncpus)]

    def set_percpu(self, key, values: list) -> None:
        buf = self._percpu_buffer()
        for i, v in enumerate(values):
            ct.memmove(ct.addressof(buf) + i * self._stride, ct.addressof(v), ct.sizeof(v))
        syscall.update(self.fd, key, buf)

    def zero(self, key) -> None:
        """Reset an array slot (every CPU's copy for a per-CPU map)."""
        if self.percpu:
            syscall.update(self.fd, key, self._percpu_buffer())
        else:
            syscall.update(self.fd, key, self.value_type())

    # ---- whole map ----
    def keys(self) -> Iterator:
        key = None
        while True:
            nxt = self.key_type()
            if not syscall.next_key(self.fd, key, nxt):
                return
            yield nxt
            key = nxt

    def _batches(self, batch: int) -> Iterator[tuple]:
        """(n, keys, values) per batched lookup; None once if the map has no batch ops."""
        keys = (self.key_type * batch)()
        values = (self.value_type * batch)()
        in_batch, out_batch = None, self.key_type()   # the token fits in a key
        while True:
            try:
                n, done = syscall.lookup_batch(self.fd, keys, values, batch, in_batch,
                                               out_batch)
            except OSError:
                if in_batch is not None:
                    raise
                yield None
                return
            yield n, keys, values
            if done:
                return
            in_batch, out_batch = out_batch, self.key_type()

    def items(self, batch: int = 4096) -> Iterator[tuple]:
        """Every (key, value): `batch` elements per syscall where the kernel can."""
        ksize, vsize = ct.sizeof(self.key_type), ct.sizeof(self.value_type)
        for got in self._batches(batch):
            if got is None:
                yield from self._items_one_by_one()   # no batch ops for this map
                return
            n, keys, values = got
            for i in range(n):
                yield (self.key_type.from_buffer_copy(keys, i * ksize),
                       self.value_type.from_buffer_copy(values, i * vsize))

    def count(self, batch: int = 4096) -> int:
        """How many entries the map holds (a hash map's occupancy): batched lookups,
        no Python object per entry."""
        total = 0
        for got in self._batches(batch):
            if got is None:
                return sum(1 for _ in self.keys())
            total += got[0]
        return total

    def _items_one_by_one(self) -> Iterator[tuple]:
        for key in self.keys():
            value = self.get(key)
            if value is not None:
                yield key, value
