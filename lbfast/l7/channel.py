"""Daemon <-> worker messages: length-prefixed pickles over a unix stream socket pair, with
listening sockets passed alongside (SCM_RIGHTS). Both ends run it on their event loop."""
import asyncio
import pickle
import socket
import struct
from array import array
from collections import deque
from collections.abc import Callable

HEADER = struct.Struct("!IH")       # payload length, number of fds
MAX_FDS = 200                       # below SCM_MAX_FD (253)


class Channel:
    def __init__(self, sock: socket.socket, on_message: Callable[[dict, list[int]], None],
                 on_close: Callable[[], None] | None = None):
        self.sock = sock
        sock.setblocking(False)
        self.on_message = on_message
        self.on_close = on_close
        self.loop = asyncio.get_running_loop()
        self.rbuf = bytearray()
        self.fds: deque[int] = deque()
        self.out: deque[list] = deque()     # [memoryview, fds]
        self.closed = False
        self.writing = False
        self.loop.add_reader(sock.fileno(), self._readable)

    def send(self, msg: dict, fds: list[int] = ()) -> None:
        if self.closed:
            raise ConnectionError("channel closed")
        if len(fds) > MAX_FDS:
            raise ValueError(f"at most {MAX_FDS} descriptors per message")
        payload = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        self.out.append([memoryview(HEADER.pack(len(payload), len(fds)) + payload), list(fds)])
        self._flush()

    def _flush(self) -> None:
        while self.out:
            buf, fds = self.out[0]
            try:
                if fds:
                    n = self.sock.sendmsg([buf], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", fds))])
                    self.out[0][1] = []
                else:
                    n = self.sock.send(buf)
            except BlockingIOError:
                break
            except OSError:
                self.close()
                return
            if n < len(buf):
                self.out[0][0] = buf[n:]
            else:
                self.out.popleft()
        if self.out and not self.writing:
            self.loop.add_writer(self.sock.fileno(), self._flush)
            self.writing = True
        elif not self.out and self.writing:
            self.loop.remove_writer(self.sock.fileno())
            self.writing = False

    def _readable(self) -> None:
        while not self.closed:
            try:
                data, anc, _flags, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 253))
            except BlockingIOError:
                return
            except OSError:
                data, anc = b"", []
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array("i")
                    fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
                    self.fds.extend(fds)
            if not data:
                self.close()
                return
            self.rbuf += data
            while len(self.rbuf) >= HEADER.size:
                length, nfds = HEADER.unpack_from(self.rbuf)
                if len(self.rbuf) < HEADER.size + length:
                    break
                msg = pickle.loads(self.rbuf[HEADER.size:HEADER.size + length])
                del self.rbuf[:HEADER.size + length]
                fds = [self.fds.popleft() for _ in range(nfds)]
                self.on_message(msg, fds)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.sock.fileno())
            if self.writing:
                self.loop.remove_writer(self.sock.fileno())
        except (ValueError, OSError):
            pass
        self.sock.close()
        if self.on_close is not None:
            self.on_close()
