"""Indexes into the program's arrays (frontend, backend, server and selector slots).
A freed slot goes to the back of the queue: it is reused as late as possible, so a
packet still holding an old index (or a flow still counted on it) rarely meets a new
occupant."""
from collections import deque


class SlotsExhausted(RuntimeError):
    pass


class Slots:
    def __init__(self, size: int, name: str, used: set[int] = frozenset()):
        self.name = name
        self.size = size
        self._free = deque(i for i in range(size) if i not in used)

    def take(self) -> int:
        if not self._free:
            raise SlotsExhausted(f"all {self.size} {self.name} slots are in use "
                                 f"(raise the constant in bpf/consts.h)")
        return self._free.popleft()

    def give_back(self, slot: int) -> None:
        self._free.append(slot)

    @property
    def free(self) -> int:
        return len(self._free)
