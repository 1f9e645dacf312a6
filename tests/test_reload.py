"""Reload under load: 20 SIGHUP reloads (servers added and removed, one invalid config)
while a bounded client keeps opening connections and one stream keeps flowing."""
import socket
import threading
import time

from tests.lbrun import Backends, Daemon, ask, free_port, tcp_config

VIP = "127.0.0.11"


def test_twenty_reloads_under_load(tmp_path):
    backends = Backends(["a", "b", "c"])
    port, echo_port = free_port(VIP), free_port(VIP)
    names = ["a", "b", "c"]

    def config(active: list[str]) -> dict:
        cfg = tcp_config(VIP, port, [{"address": "127.0.0.1", "port": backends.http[n]} for n in active])
        lb = cfg["lbs"][0]
        lb["backends"].append({"name": "echo", "forward_port": backends.echo["a"],
                               "servers": [{"address": "127.0.0.1"}]})
        lb["frontends"].append({"name": "stream", "port": echo_port, "backend": "echo"})
        return cfg

    d = Daemon(tmp_path, config(names))
    stop = threading.Event()
    failures, served, streamed = [], [], [0]

    def clients():
        deadline = time.monotonic() + 60          # bounded: stops by itself
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                served.append(ask(VIP, port, timeout=3))
            except OSError as e:
                failures.append(repr(e))

    def stream():
        with socket.create_connection((VIP, echo_port), timeout=5) as s:
            block = b"0123456789abcdef" * 256
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                s.sendall(block)
                got = b""
                while len(got) < len(block):
                    got += s.recv(len(block) - len(got))
                if got != block:
                    failures.append("stream corrupted")
                    return
                streamed[0] += len(block)

    workers = [threading.Thread(target=clients) for _ in range(3)] + [threading.Thread(target=stream)]
    for w in workers:
        w.start()
    try:
        plans = [names, ["a"], ["a", "b"], ["b", "c"], ["c"], names] * 4
        for i in range(20):
            if i == 10:
                d.path.write_text('{"lbs": [{"name": "t", "backends": [{"name": "pool", "forward_port": 0}]}]}')
            else:
                d.write(config(plans[i]))
            d.sighup_and_wait(f"reload {i}")
            time.sleep(0.1)
        st = d.status()
    finally:
        stop.set()
        for w in workers:
            w.join()
        d.close()
        log = d.logtext()
        backends.close()
    assert failures == []
    assert st["reloads"] == 19 and st["reload_failures"] == 1
    assert "lbs[0].backends[0].forward_port: must be 1..65535" in log
    assert len(served) > 100 and set(served) == {"a", "b", "c"}
    assert streamed[0] > 100_000


def test_invalid_reload_keeps_the_old_config_running(tmp_path):
    backends = Backends(["a"])
    port = free_port(VIP)
    d = Daemon(tmp_path, tcp_config(VIP, port, [{"address": "127.0.0.1", "port": backends.http["a"]}]))
    try:
        d.path.write_text('{"lbs": [{"name": "t", "vip": "127.0.0.11", "backends": [], '
                          '"frontends": [{"name": "f", "port": 80, "backend": "nope"}]}]}')
        from control.runtime import ControlError
        try:
            d.reload()
            raise AssertionError("reload of an invalid config succeeded")
        except ControlError as e:
            assert "lbs[0].frontends[0].backend: no backend named 'nope'" in str(e)
        assert ask(VIP, port) == "a"
        assert "reload rejected" in d.logtext()
    finally:
        d.close()
        backends.close()


def test_reload_that_cannot_bind_changes_nothing(tmp_path):
    backends = Backends(["a"])
    port, taken = free_port(VIP), socket.socket()
    taken.bind((VIP, 0))
    taken.listen()
    d = Daemon(tmp_path, tcp_config(VIP, port, [{"address": "127.0.0.1", "port": backends.http["a"]}]))
    try:
        cfg = tcp_config(VIP, port, [{"address": "127.0.0.1", "port": backends.http["a"]}])
        cfg["lbs"][0]["frontends"].append({"name": "g", "port": taken.getsockname()[1], "backend": "pool"})
        d.write(cfg)
        from control.runtime import ControlError
        try:
            d.reload()
            raise AssertionError("reload succeeded although the port is taken")
        except ControlError as e:
            assert "address already in use" in str(e).lower()
        assert ask(VIP, port) == "a"
        assert len(d.status()["frontends"]) == 1
    finally:
        taken.close()
        d.close()
        backends.close()
