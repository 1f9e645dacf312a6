"""keepalived's track script: exit 0 while the lbfast daemon on the given control socket
answers `ha-check` with ok. Standard library only and run as a file (`python -I -S
probe.py SOCKET`), so it starts in milliseconds: keepalived runs it every second."""
import json
import socket
import sys

TIMEOUT_S = 0.8     # under keepalived's 1 s script timeout, so a hung daemon is a clean "fail"


def healthy(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT_S)
            s.connect(path)
            s.sendall(b'{"cmd": "ha-check"}\n')
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return json.loads(data).get("ok") is True
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(0 if len(sys.argv) == 2 and healthy(sys.argv[1]) else 1)
