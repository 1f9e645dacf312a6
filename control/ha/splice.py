"""Values spliced into keepalived.conf and bird.conf. keepalived runs scripts as root and
BIRD speaks for this host to its routers, so a generator re-checks every value it did not
write itself, whatever validated it before: each must be one bare word of a small alphabet
(or a canonical address), else the render is refused. Quoting alone would not do:
keepalived substitutes $NAME and ${NAME} in any line and starts a comment at a # or ! anywhere
in a line; BIRD 2.0's strings have no escapes at all."""
import ipaddress
import re

# keepalived: no white space, quotes, braces, comment (# !), $ substitution, ~ sequence,
# backslash; '@' starts a conditional line, so not first
KEEPALIVED_WORD = re.compile(r"[A-Za-z0-9_.:/%+=-][A-Za-z0-9_.:/%+=@-]*")
# BIRD: printable ASCII without the string's own delimiter or a backslash
BIRD_STRING = re.compile(r'[\x20-\x21\x23-\x5b\x5d-\x7e]*')
ADDRESS = re.compile(r"[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]{1,15})?")


class UnsafeValue(ValueError):
    """A value that cannot go into a generated configuration as it is."""


def _refuse(conf: str, what: str, value, why: str):
    shown = repr(value)[:60]
    raise UnsafeValue(f"{conf}: refusing {what} {shown}: {why}")


def address(conf: str, what: str, value: str, scoped: bool = False, v4: bool = False) -> str:
    """A canonical IPv4/IPv6 address as a bare word; a scope id only where `scoped`."""
    if not isinstance(value, str) or not ADDRESS.fullmatch(value):
        _refuse(conf, what, value, "not an IP address")
    addr, _, scope = value.partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        _refuse(conf, what, value, "not an IP address")
    if str(ip) != addr:
        _refuse(conf, what, value, f"not in canonical form ({ip})")
    if scope and (not scoped or ip.version != 6 or not ip.is_link_local):
        _refuse(conf, what, value, "a scope id is not allowed here")
    if v4 and ip.version != 4:
        _refuse(conf, what, value, "not an IPv4 address")
    return value


def keepalived_word(what: str, value: str) -> str:
    if not isinstance(value, str) or not KEEPALIVED_WORD.fullmatch(value):
        _refuse("keepalived.conf", what, value, "not one word of letters, digits and _.:/%+=@-")
    return value


def bird_string(what: str, value: str) -> str:
    """A double-quoted BIRD string."""
    if not isinstance(value, str) or not BIRD_STRING.fullmatch(value):
        _refuse("bird.conf", what, value, 'not printable ASCII without " or \\')
    return f'"{value}"'
