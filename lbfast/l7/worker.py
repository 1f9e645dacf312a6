"""An L7 worker process: runs one L7Proxy on uvloop and obeys the daemon over its channel
(apply, health, session close, stats, stop). It stops when the daemon goes away.

    python -m lbfast.l7.worker --channel FD
"""
import argparse
import asyncio
import logging
import signal
import socket

from lbfast import access_log
from lbfast.l7.channel import Channel
from lbfast.l7.proxy import L7Proxy

log = logging.getLogger("lbfast.l7.worker")


class Worker:
    def __init__(self, sock: socket.socket):
        self.proxy: L7Proxy | None = None
        self.stop = asyncio.Event()
        self.grace_s = 5.0
        self.sockets: dict[tuple, socket.socket] = {}
        self.queue: asyncio.Queue = asyncio.Queue()
        self.channel = Channel(sock, self.received, self.stop.set)

    def received(self, msg: dict, fds: list[int]) -> None:
        for key, fd in zip(msg.get("fd_keys", ()), fds):
            old = self.sockets.pop(key, None)
            if old is not None:
                old.close()
            self.sockets[key] = socket.socket(fileno=fd)
        self.queue.put_nowait(msg)

    async def run(self) -> None:
        task = asyncio.create_task(self.obey())
        await self.stop.wait()
        task.cancel()
        if self.proxy is not None:
            await self.proxy.drain(self.grace_s)
            await self.proxy.close()
        for sock in self.sockets.values():
            sock.close()
        self.channel.close()

    async def obey(self) -> None:
        while True:
            msg = await self.queue.get()
            try:
                result = await self.handle(msg)
                reply = {"re": msg.get("id"), "ok": True, "result": result}
            except Exception as e:      # the daemon decides what a failure means
                log.exception("worker command %s failed", msg.get("cmd"))
                reply = {"re": msg.get("id"), "ok": False, "error": f"{type(e).__name__}: {e}",
                         "oserror": isinstance(e, OSError)}
            if msg.get("id") is not None and not self.channel.closed:
                self.channel.send(reply)

    async def handle(self, msg: dict):
        cmd = msg["cmd"]
        if cmd == "init":
            self.proxy = L7Proxy(msg["secret"], msg["limits"], msg.get("ticket_keys", ()))
            self.grace_s = msg["limits"].drain_ms / 1000
            self.proxy.passive.on_failure = self.passive_event("passive")
            self.proxy.passive.on_ok = self.passive_event("passive_ok")
            logging.getLogger().setLevel(msg.get("log_level", logging.WARNING))
            return None
        proxy = self.proxy
        if cmd == "noop":          # carried listening sockets only
            return None
        if cmd == "apply":
            wanted = {f.listen_key for f in msg["frontends"]}
            for key in set(self.sockets) - wanted:
                self.sockets.pop(key).close()
            await proxy.apply(msg["frontends"], dict(self.sockets))
            for key in [k for k in self.sockets if k in proxy.listen_socks]:
                del self.sockets[key]       # the proxy owns them now
            return None
        if cmd == "secret":
            proxy.use_secret(msg["secret"])
            return None
        if cmd == "ticket_keys":
            proxy.rotate_ticket_keys(msg["keys"])
            return None
        if cmd == "health":
            for backend_id, server_key, up in msg["changes"]:
                proxy.set_server_health(backend_id, server_key, up)
            return None
        if cmd == "close_sessions":
            return proxy.close_server_sessions(msg["backend_id"], msg["server_key"])
        if cmd == "stats":
            return proxy.stats()
        if cmd == "stop":
            self.grace_s = msg.get("grace_s", self.grace_s)
            self.stop.set()
            return None
        raise ValueError(f"unknown command {cmd!r}")

    def passive_event(self, event: str):
        def send(backend_id: int, server_key: str, reason: str) -> None:
            if not self.channel.closed:
                self.channel.send({"event": event, "backend_id": backend_id,
                                   "server_key": server_key, "reason": reason})
        return send


async def serve(fd: int) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(socket.socket(fileno=fd))
    loop.add_signal_handler(signal.SIGTERM, worker.stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)    # the daemon stops us, not Ctrl-C
    loop.add_signal_handler(signal.SIGUSR1, access_log.reopen_all)   # logrotate
    try:
        await worker.run()
    finally:
        access_log.close_all()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lbfast.l7.worker")
    ap.add_argument("--channel", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s l7-worker[%(process)d] %(levelname)s %(message)s")
    import uvloop
    uvloop.run(serve(args.channel))


if __name__ == "__main__":
    main()
