"""A weight change applied by a reload starts the smooth weighted round robin afresh: the
next connections of the userspace L4 proxy follow the new ratio interleaved from the first
pick, instead of paying off what the old weights left owing (100 -> 3 used to send the
next ten connections all to the other server)."""
from collections import Counter

from tests.lbrun import Backends, Daemon, ask, free_port, tcp_config

VIP = "127.0.0.12"


def longest_run(names: list[str]) -> int:
    best = run = 0
    for i, n in enumerate(names):
        run = run + 1 if i and names[i - 1] == n else 1
        best = max(best, run)
    return best


def test_next_connections_follow_the_new_weights_interleaved(tmp_path):
    backends = Backends(["a", "b"])
    port = free_port(VIP)

    def config(wa: int, wb: int) -> dict:
        return tcp_config(VIP, port, [{"address": "127.0.0.1", "port": backends.http["a"], "weight": wa},
                                      {"address": "127.0.0.1", "port": backends.http["b"], "weight": wb}])
    d = Daemon(tmp_path, config(100, 3))
    try:
        # ten picks into the 100:3 cycle: a has run far ahead of its share at weight 3
        assert [ask(VIP, port) for _ in range(10)] == ["a"] * 10
        for (wa, wb), longest in (((3, 3), 1), ((3, 6), 2), ((9, 3), 3)):
            d.write(config(wa, wb))
            d.reload()
            got = [ask(VIP, port) for _ in range(12)]
            assert Counter(got) == {"a": 12 * wa // (wa + wb), "b": 12 * wb // (wa + wb)}, got
            assert longest_run(got) <= longest, got
    finally:
        d.close()
        backends.close()
