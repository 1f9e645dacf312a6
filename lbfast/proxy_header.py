"""PROXY protocol headers a proxy writes to a server: the C encoder, its pure-Python twin
(kept for tests and the micro bench) and a parser for test backends."""
import ipaddress
import struct

from lbfast._proxy_header import encode, encode_v1, encode_v2  # noqa: F401

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _normal(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def reference_encode(version: int, src: str, src_port: int, dst: str, dst_port: int) -> bytes:
    s, d = _normal(src), _normal(dst)
    six = s.version == 6 or d.version == 6      # mixed families: both as IPv6
    if version == 1:
        def text(ip):
            return f"::ffff:{ip}" if six and ip.version == 4 else str(ip)
        return f"PROXY TCP{6 if six else 4} {text(s)} {text(d)} {src_port} {dst_port}\r\n".encode("ascii")
    if version == 2:
        def packed(ip):
            return b"\0" * 10 + b"\xff\xff" + ip.packed if six and ip.version == 4 else ip.packed
        body = packed(s) + packed(d) + struct.pack("!HH", src_port, dst_port)
        return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21 if six else 0x11, len(body)) + body
    raise ValueError(f"PROXY protocol version {version}")


def parse(data: bytes) -> tuple[dict, int] | None:
    """(info, header length) when `data` starts with a complete PROXY header, else None.
    info: {"version", "src": (ip, port), "dst": (ip, port)}."""
    if data.startswith(b"PROXY "):
        end = data.find(b"\r\n")
        if end < 0:
            return None
        parts = data[6:end].decode("ascii").split(" ")
        if parts[0] == "UNKNOWN":
            return {"version": 1, "src": None, "dst": None}, end + 2
        return {"version": 1, "src": (parts[1], int(parts[3])), "dst": (parts[2], int(parts[4]))}, end + 2
    if data.startswith(V2_SIGNATURE) and len(data) >= 16:
        _, fam, length = struct.unpack("!BBH", data[12:16])
        if len(data) < 16 + length:
            return None
        body = data[16:16 + length]
        if fam >> 4 == 1:
            s, d, sp, dp = struct.unpack("!4s4sHH", body[:12])
        else:
            s, d, sp, dp = struct.unpack("!16s16sHH", body[:36])
        return ({"version": 2, "src": (str(ipaddress.ip_address(s)), sp),
                 "dst": (str(ipaddress.ip_address(d)), dp)}, 16 + length)
    return None
