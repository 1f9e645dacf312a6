"""The grammar of every string the model accepts. The config file, both API dialects and
the CLI all build model objects, so each string meets one of these rules wherever it came
from; a value that breaks one is refused with a message the field's path goes in front of.

Text that only people read (names, labels, tags) is printable: letters, marks, digits,
punctuation, symbols and the plain space (no control, format or separator characters).
Text that reaches a wire protocol, a generated file or a path has the grammar of that
protocol: RFC 9110 tokens, RFC 3986 characters, DNS names, canonical addresses."""
import ipaddress
import os
import re
from typing import Annotated

from pydantic import AfterValidator

BPFFS = "/sys/fs/bpf"
SHOWN = 40              # characters of a refused value quoted back in the error


def shown(v: str) -> str:
    return repr(v if len(v) <= SHOWN else v[:SHOWN] + "...")


def rule(test, lo: int, hi: int, what: str, secret: bool = False):
    """A str type: `lo..hi` characters, and `test(v)` true. The closure's `lo`/`hi` are read
    by the API's schemas (control.api.fields.model_bounds). A secret is never quoted back."""
    def check(v: str) -> str:
        if not lo <= len(v) <= hi:
            raise ValueError(f"must be {lo}..{hi} characters")
        if not test(v):
            raise ValueError(f"must be {what}" if secret else f"{shown(v)} is not {what}")
        return v
    return Annotated[str, AfterValidator(check)]


def pattern(regex: str, lo: int, hi: int, what: str, secret: bool = False):
    compiled = re.compile(regex)
    return rule(lambda v: compiled.fullmatch(v) is not None, lo, hi, what, secret)


# -- text for people --------------------------------------------------------------------
def _printable(v: str) -> bool:
    return v.isprintable() and v == v.strip(" ")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _no_controls(v: str) -> bool:
    return _CONTROL.search(v) is None


def text(lo: int, hi: int):
    """Printable, no space at either end: names, labels, tags."""
    return rule(_printable, lo, hi, "printable text (letters, digits, punctuation, symbols, "
                "inner spaces; no control characters)")


def free_text(lo: int, hi: int):
    """Any characters but controls (CR, LF, NUL, tab, DEL, C1) and lone surrogates."""
    return rule(_no_controls, lo, hi, "text without control characters")


# -- identifiers ------------------------------------------------------------------------
Uuid = pattern(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", 36, 36,
               "a lowercase UUID")
Ident = pattern(r"[A-Za-z0-9_.:@-]*", 0, 128, "an identifier (letters, digits, _.:@-)")
Word = pattern(r"[A-Za-z0-9_.-]+", 1, 64, "a word (letters, digits, _.-)")
InterfaceName = rule(lambda v: re.fullmatch(r"[A-Za-z0-9_.-]*", v) is not None and v not in (".", ".."),
                     0, 15, "an interface name (up to 15 of letters, digits, _.-)")
# bearer tokens travel in HTTP headers: visible ASCII only
CookieSecret = pattern(r"[A-Za-z0-9_-]+", 32, 128, "a cookie secret (32..128 of A-Z a-z 0-9 _ -)",
                       secret=True)
ApiToken = pattern(r"[\x21-\x7e]+", 1, 4096, "a token of visible ASCII characters", secret=True)
# PEM is ASCII armour: lines of printable ASCII
Pem = pattern(r"[\x20-\x7e\t\r\n]*", 0, 1_000_000, "PEM text (printable ASCII lines)", secret=True)

_DNS_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
DnsName = pattern(rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?)?", 0, 253, "a DNS name")
ServerName = pattern(rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*)?", 0, 253, "a DNS host name (SNI)")


def object_kind(v: str) -> str:
    if not re.fullmatch(r"[a-z_]{1,32}", v):
        raise ValueError(f"{shown(v)} is not an object kind (a-z, _)")
    return v


# -- HTTP (RFC 9110, RFC 3986, RFC 6265) ---------------------------------------------------
_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"
HttpToken = pattern(f"{_TCHAR}+", 1, 16, "an HTTP method (an RFC 9110 token)")
CookieName = pattern(f"{_TCHAR}+", 1, 64, "a cookie name (an RFC 6265 token: no spaces, "
                     'controls or ()<>@,;:\\"/[]?={})')
_PCT = r"%[0-9A-Fa-f]{2}"
_SUB_DELIMS = r"!$&'()*+,;="
HttpUri = pattern(rf"/(?:[A-Za-z0-9._~{re.escape(_SUB_DELIMS)}:@/?-]|{_PCT})*", 1, 2048,
                  "an origin-form request target (RFC 3986: starts with /, no spaces or controls)")
HttpHost = pattern(rf"(?:(?:[A-Za-z0-9._~{re.escape(_SUB_DELIMS)}-]|{_PCT})+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?|",
                   0, 255, "a Host header value (RFC 9110: host[:port])")
# database / directory user names: any printable text (an LDAP DN has spaces and commas)
ProtocolUser = rule(lambda v: v.isprintable(), 0, 255, "a user name without control characters")


# -- addresses ----------------------------------------------------------------------------
_SCOPE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def ip_address(v: str, scoped: bool = True) -> str:
    """The canonical text of an IPv4/IPv6 address. A scope id (fe80::1%eth0) only on a
    link-local IPv6 address, only where `scoped`, and only an interface name or number."""
    addr, sep, scope = v.partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"{shown(v)} is not an IPv4 or IPv6 address") from None
    if not sep:
        return str(ip)
    if not scoped:
        raise ValueError(f"{shown(v)}: a scope id (%...) is not allowed here")
    if ip.version != 6 or not ip.is_link_local:
        raise ValueError(f"{shown(v)}: a scope id (%...) goes only with a link-local IPv6 address")
    if not _SCOPE.fullmatch(scope):
        raise ValueError(f"{shown(v)}: a scope id is 1..15 of letters, digits, _.-")
    return f"{ip}%{scope}"


def unscoped_ip_address(v: str) -> str:
    return ip_address(v, scoped=False)


def ip_network(v: str) -> str:
    if "%" in v:
        raise ValueError(f"{shown(v)}: a scope id (%...) is not allowed in a network")
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        raise ValueError(f"{shown(v)} is not an address or CIDR") from None


def listen_address(v: str) -> str:
    host, sep, port = v.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{shown(v)} is not HOST:PORT")
    bracketed = host.startswith("[") and host.endswith("]")
    canonical = ip_address(host[1:-1] if bracketed else host)
    if (":" in canonical) != bracketed or canonical != (host[1:-1] if bracketed else host):
        raise ValueError(f"{shown(v)} is not HOST:PORT (IPv6 in brackets, canonical address)")
    return v


IpAddress = Annotated[str, AfterValidator(ip_address)]
UnscopedIpAddress = Annotated[str, AfterValidator(unscoped_ip_address)]
Network = Annotated[str, AfterValidator(ip_network)]
Listen = Annotated[str, AfterValidator(listen_address)]


# -- paths ----------------------------------------------------------------------------------
def bpffs_dir(v: str) -> str:
    """A directory strictly below /sys/fs/bpf, written in normal form (no '.', '..', '//' or
    trailing '/'), of portable file-name characters: the loader removes unknown entries
    there, and the path is a C string constant of the XDP program."""
    if not re.fullmatch(r"[A-Za-z0-9_.@+/-]+", v):
        raise ValueError(f"{shown(v)} is not a path of letters, digits, _.@+-/")
    if os.path.normpath(v) != v:
        raise ValueError(f"{shown(v)} is not a normal path (write {os.path.normpath(v)!r})")
    if not v.startswith(BPFFS + "/"):
        raise ValueError(f"{shown(v)} is not inside {BPFFS}")
    return v


BpffsDir = Annotated[str, AfterValidator(bpffs_dir)]


def log_file(v: str) -> str:
    """An absolute file path in normal form, of portable file-name characters: the daemon
    (root) opens it for appending, so it must say exactly which file."""
    if not 1 <= len(v) <= 4096:
        raise ValueError("must be 1..4096 characters")
    if not re.fullmatch(r"[A-Za-z0-9_.@+/-]+", v):
        raise ValueError(f"{shown(v)} is not a path of letters, digits, _.@+-/")
    if not v.startswith("/") or os.path.normpath(v) != v or v.endswith("/"):
        raise ValueError(f"{shown(v)} is not an absolute path in normal form")
    return v


LogFile = Annotated[str, AfterValidator(log_file)]
