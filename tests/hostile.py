"""The one corpus of hostile strings the hardening tests feed to the model, the generators,
the CLI and the API: line breaks, NUL, quotes, braces, statement and comment characters,
keepalived's $-substitution and @-conditionals, path climbing, non-ASCII, very long
strings, and near-valid values with an injection appended."""
from hypothesis import strategies as st

INJECTIONS = [
    "\n", "\r\n", "\r", "\x00", "\t", " ", "\x7f", "\x85", "\u2028", "\u202e", "\ufeff",
    '"', "'", "\\", "{", "}", "}\n", ";", "%", "#", "!", "$", "${_RANDOM}", "$X", "@", "@^x ",
    "~SEQ(x,1,3)", "..", "/..", "/../..", "//", ":", "=", ",", "<", ">", "?", "*",
    "\nvrrp_script evil {\n    script \"/usr/bin/touch /tmp/pwned\"\n}\n",
    '"; };\nprotocol static evil { ipv4; route 0.0.0.0/0 blackhole; }\n#',
    "\r\nSet-Cookie: stolen=1", "\r\nX-Injected: 1\r\n\r\n", "\x00options=-c%20x",
    "\ud800", "é", "Ж", "中文", "\U0001F600",
]
# values a field accepts, that an injection is appended to
VALID = ["10.0.0.1", "fd00::1", "fe80::1%eth0", "127.0.0.64/26", "/sys/fs/bpf/lbfast", "/health",
         "example.com", "GET", "lbfast", "web", "eth0", "s3cret", "postgres", "fr-par-1"]
CORPUS = [
    "", " ", "a b", " web", "web ", "x" * 70_000, "a" * 256, "a" * 33,
    "fe80::1%x\n}\nvrrp_script evil {\n script \"touch /tmp/pwned\"\n}", "fe80::1%eth0 ", "fe80::1%",
    "10.0.0.1%eth0", "2001:db8::1%eth0", "fe80::1%eth0;", "fe80::1%" + "a" * 16, "::ffff:10.0.0.1",
    "/sys/fs/bpf/../../etc", "/sys/fs/bpf/x/../../..", "/sys/fs/bpf", "/sys/fs/bpf/", "/sys/fs/bpfx",
    "//sys/fs/bpf/x", "/sys/fs/bpf/./x", "/sys/fs/bpf/a b",
    "include /etc/passwd", "lbfast=x; Path=/", "GET / HTTP/1.1", "/a b", "/a%zz", "/a#frag",
    *INJECTIONS, *(v + i for v in VALID for i in INJECTIONS[:30]), *(i + v for v in VALID[:4] for i in INJECTIONS[:12]),
]

hostile_text = st.one_of(
    st.sampled_from(CORPUS),
    st.builds(lambda v, i, tail: v + i + tail, st.sampled_from(VALID), st.sampled_from(INJECTIONS), st.text(max_size=8)),
    st.text(),
    st.text(st.characters(max_codepoint=0x7f)),
)
