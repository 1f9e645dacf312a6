"""keepalived.conf and bird.conf cannot be broken by a value, even one validation missed:
hostile strings go through the model into the generators, and straight into the generators
with validation bypassed; each file is read back with a tokenizer of that program's grammar
and must have the statements and blocks of a clean render, nothing more. The real
`keepalived --config-test` and `bird -p` read what the model accepts."""
import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck as HypothesisHealthCheck, given, settings, strategies as st

from control import config as configfile
from control.config import ConfigError
from control.ha import bird, keepalived
from control.ha.splice import UnsafeValue
from control.model import BgpNeighbor, BgpSection, HaSection
from tests.hostile import CORPUS, hostile_text

PATHS = keepalived.Paths.under(Path("/run/lbfast/lbfast.ha"))
PROBE = ["/usr/bin/python3", "-I", "-S", "/usr/lib/lbfast/probe.py", "/run/lbfast/lbfast.sock"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HypothesisHealthCheck.too_slow])


# -- reading the files back -------------------------------------------------------------------
def keepalived_skeleton(text: str) -> list[tuple[int, str]]:
    """keepalived's reading: a comment runs from # or ! to the end of the line, a line is
    words split on white space with quotes removed, a line ending in { opens a block and a
    lone } closes it. (depth, first word) of every line, and each word checked."""
    out, depth = [], 0
    for line in text.splitlines():
        line = re.split(r"[#!]", line, maxsplit=1)[0]
        assert "$" not in line and not line.lstrip().startswith("@"), line   # no substitution, no conditional
        words = shlex.split(line, posix=True)       # raises on an unbalanced quote
        if not words:
            continue
        if words == ["}"]:
            depth -= 1
            assert depth >= 0, text
            continue
        opens = words[-1] == "{"
        for w in words[:-1] if opens else words:
            assert re.fullmatch(r"[A-Za-z0-9_.:/%+=@ -]+", w), (w, line)
        # address lists (peers, VIPs) hold a value as their first word
        first = "<address>" if re.fullmatch(r"[0-9A-Fa-f:.]+(/[0-9]+)?", words[0]) else words[0]
        out.append((depth, first))
        depth += opens
    assert depth == 0, text
    return out


BIRD_TOKEN = re.compile(r'\s+|#[^\n]*|/\*.*?\*/|"[^"\n]*"|[{};,]|[^\s{};,"#/]+(?:/[0-9]+)?', re.S)


def bird_skeleton(text: str) -> list[tuple[int, str]]:
    """BIRD's lexer: comments (# to the end of line, /* */), strings without escapes, { } ;
    and words. (depth, first token) of every statement and block."""
    pos, depth, tokens, out = 0, 0, [], []
    while pos < len(text):
        m = BIRD_TOKEN.match(text, pos)
        assert m and m.end() > pos, text[pos:pos + 40]
        pos, tok = m.end(), m.group(0)
        if tok.isspace() or tok.startswith(("#", "/*")):
            continue
        if tok in (";", "{"):
            if tokens:
                out.append((depth, tokens[0]))
            tokens = []
            depth += tok == "{"
        elif tok == "}":                # a list in braces ({ info, warning }) ends without ;
            if tokens:
                out.append((depth, tokens[0]))
            tokens = []
            depth -= 1
            assert depth >= 0
        else:
            tokens.append(tok)
    assert depth == 0 and not tokens, text
    return out


# -- clean renders to compare with ---------------------------------------------------------------
def same_family(value: str, v4: str, v6: str) -> str:
    return v6 if ":" in value else v4


def clean_ha(ha: HaSection) -> HaSection:
    return HaSection.model_construct(**{
        **dict(ha), "interface": "eth0", "auth_pass": "pw" if ha.auth_pass else "",
        "peers": [same_family(p, f"10.0.0.{i + 2}", f"fd00::{i + 2}") for i, p in enumerate(ha.peers)],
        "source_address": ha.source_address and same_family(ha.source_address, "10.0.0.1", "fd00::1"),
        "bgp": BgpSection.model_construct(**{**dict(ha.bgp), "router_id": "10.0.0.1", "neighbors": [
            BgpNeighbor.model_construct(address=f"fe80::{i + 1}%eth0" if "%" in n.address
                                        else same_family(n.address, f"10.1.0.{i + 1}", f"fd01::{i + 1}"),
                                        as_=n.as_, multihop=n.multihop)
            for i, n in enumerate(ha.bgp.neighbors)]})})


def clean_vips(vips: list[str]) -> list[str]:
    return [same_family(v, f"10.9.0.{i + 1}", f"fd09::{i + 1}") for i, v in enumerate(vips)]


def assert_keepalived_intact(ha: HaSection, vips: list[str]) -> str | None:
    """The render of `ha`: refused, or with exactly the statements of a clean render."""
    try:
        text = keepalived.render(ha, vips, PATHS, PROBE)
    except UnsafeValue:
        return None
    assert keepalived_skeleton(text) == keepalived_skeleton(keepalived.render(clean_ha(ha), clean_vips(vips),
                                                                              PATHS, PROBE))
    return text


def assert_bird_intact(ha: HaSection, router_id: str, announce: list[str]) -> str | None:
    try:
        text = bird.render(ha, router_id, announce)
    except UnsafeValue:
        return None
    assert bird_skeleton(text) == bird_skeleton(bird.render(clean_ha(ha), "10.0.0.1", clean_vips(sorted(announce))))
    return text


# -- through the model ----------------------------------------------------------------------------
def vrrp_doc(**ha) -> dict:
    return {"ha": {"mode": "vrrp", "interface": "eth0", "vrrp_version": 2, "auth_pass": "pw",
                   "peers": ["10.0.0.2"], "source_address": "10.0.0.1", **ha},
            "lbs": [{"name": "web", "vip": "10.9.0.1"}]}


def bgp_doc(address: str = "10.1.0.1", router_id: str = "10.0.0.1") -> dict:
    return {"ha": {"mode": "bgp", "bgp": {"local_as": 65001, "router_id": router_id,
                                          "neighbors": [{"address": address, "as": 65000}]}},
            "lbs": [{"name": "web", "vip": "10.9.0.1"}]}


# (field, config with the hostile value there)
VRRP_CASES = [
    ("ha.peers[0]", lambda v: vrrp_doc(peers=[v])),
    ("ha.source_address", lambda v: vrrp_doc(source_address=v)),
    ("ha.interface", lambda v: vrrp_doc(interface=v)),
    ("ha.auth_pass", lambda v: vrrp_doc(auth_pass=v)),
    # with an IPv4 VIP beside it: keepalived advertises IPv4 ones only, and wants one
    ("lbs[0].vip", lambda v: {**vrrp_doc(), "lbs": [{"name": "web", "vip": v}, {"name": "v4", "vip": "10.9.0.2"}]}),
]
BGP_CASES = [
    ("ha.bgp.neighbors[0].address", lambda v: bgp_doc(address=v)),
    ("ha.bgp.router_id", lambda v: bgp_doc(router_id=v)),
    ("lbs[0].vip", lambda v: {**bgp_doc(), "lbs": [{"name": "web", "vip": v}]}),
]


@pytest.mark.parametrize("where, doc", VRRP_CASES + BGP_CASES)
@SETTINGS
@given(value=hostile_text)
def test_hostile_strings_through_the_model_never_change_the_generated_files(where, doc, value):
    try:
        cfg = configfile.parse(doc(value))
    except ConfigError as e:
        assert any(p.startswith(where) for p, _ in e.problems), e.problems
        return
    vips = [lb.vip for lb in cfg.lbs]
    # what the model accepted, the generators take as it is: never refused
    if cfg.ha.mode == "vrrp":
        assert assert_keepalived_intact(cfg.ha, vips) is not None
    else:
        assert assert_bird_intact(cfg.ha, cfg.ha.bgp.router_id, vips) is not None


# -- validation bypassed: the generators hold on their own ------------------------------------
@SETTINGS
@given(value=hostile_text, where=st.sampled_from(["peer", "source", "interface", "auth_pass", "vip"]))
def test_keepalived_render_refuses_or_stays_intact_without_validation(value, where):
    ha = HaSection.model_construct(**{
        **dict(HaSection()), "mode": "vrrp", "interface": value if where == "interface" else "eth0",
        "vrrp_version": 2, "auth_pass": value if where == "auth_pass" else "pw",
        "peers": ["10.0.0.2", value] if where == "peer" else ["10.0.0.2"],
        "source_address": value if where == "source" else "10.0.0.1"})
    assert_keepalived_intact(ha, ["10.9.0.1", value] if where == "vip" else ["10.9.0.1"])


@SETTINGS
@given(value=hostile_text, where=st.sampled_from(["neighbor", "router_id", "vip"]))
def test_bird_render_refuses_or_stays_intact_without_validation(value, where):
    neighbor = BgpNeighbor.model_construct(address=value if where == "neighbor" else "10.1.0.1",
                                           as_=65000, multihop=0)
    ha = HaSection.model_construct(**{**dict(HaSection()), "mode": "bgp", "bgp": BgpSection.model_construct(
        **{**dict(BgpSection()), "local_as": 65001, "neighbors": [neighbor]})})
    assert_bird_intact(ha, value if where == "router_id" else "10.0.0.1",
                       ["10.9.0.1", value] if where == "vip" else ["10.9.0.1"])


def test_the_reported_injection_is_refused_by_the_generators_themselves():
    evil = 'fe80::1%x\n}\nvrrp_script evil {\n script "touch /tmp/pwned"\n}'
    ha = HaSection.model_construct(**{**dict(HaSection()), "mode": "vrrp", "interface": "eth0",
                                      "peers": [evil]})
    with pytest.raises(UnsafeValue, match="keepalived.conf: refusing ha.peers"):
        keepalived.render(ha, ["10.9.0.1"], PATHS, PROBE)
    with pytest.raises(UnsafeValue, match="probe command"):
        keepalived.render(HaSection(mode="vrrp", interface="eth0"), ["10.9.0.1"], PATHS,
                          ["/usr/bin/python3", "/run/lbfast/my socket"])
    neighbor = BgpNeighbor.model_construct(address='fe80::1%x";\n}', as_=65000, multihop=0)
    ha = HaSection.model_construct(**{**dict(HaSection()), "mode": "bgp", "bgp": BgpSection.model_construct(
        **{**dict(BgpSection()), "local_as": 65001, "neighbors": [neighbor]})})
    with pytest.raises(UnsafeValue, match="bird.conf: refusing ha.bgp.neighbors"):
        bird.render(ha, "10.0.0.1", [])


# -- the real programs read what the model accepts ------------------------------------------------
def an_interface() -> str:
    """keepalived's config test looks the VRRP interface up: a real one, up, with multicast."""
    for _, name in socket.if_nameindex():
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text(), 16)
        if name != "lo" and flags & 0x1000 and flags & 0x1:        # IFF_MULTICAST, IFF_UP
            return name
    pytest.fail("no interface up with multicast for keepalived's config test")


# unusual values the model accepts (non-canonical spellings, interface names BIRD cannot
# read after a %), beside whatever of the corpus it accepts
UNUSUAL = ["fe80::1%eth0.100", "fe80::1%vlan-7", "FE80::1%x_y", "2001:DB8::0:1", "::ffff:10.0.0.1", "10.9.0.7"]


def accepted(doc) -> list:
    out = []
    for value in CORPUS + UNUSUAL:
        try:
            out.append(configfile.parse(doc(value)))
        except ConfigError:
            pass
    return out


def test_keepalived_config_test_reads_every_accepted_hostile_value(tmp_path):
    dev = an_interface()
    conf, checked = tmp_path / "keepalived.conf", 0
    for where, doc in VRRP_CASES:
        for cfg in accepted(doc):
            ha = cfg.ha.model_copy(update={"interface": dev})
            conf.write_text(keepalived.render(ha, [lb.vip for lb in cfg.lbs], keepalived.Paths.under(tmp_path),
                                              ["/bin/true"]))
            r = subprocess.run(["keepalived", "--config-test", "-f", str(conf)], capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0, (where, conf.read_text(), r.stdout, r.stderr)
            checked += 1
    assert checked >= 8


def test_bird_parses_every_accepted_hostile_value(tmp_path):
    conf, checked = tmp_path / "bird.conf", 0
    for where, doc in BGP_CASES:
        for cfg in accepted(doc):
            conf.write_text(bird.render(cfg.ha, cfg.ha.bgp.router_id or "10.0.0.1", [lb.vip for lb in cfg.lbs]))
            r = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, (where, conf.read_text(), r.stderr)
            checked += 1
    assert checked >= 5


def test_the_xdp_compiler_flags_refuse_a_string_that_could_end_its_literal():
    """pin_dir is a C string constant of the XDP program (-DPIN_DIR="..."): the flag
    generator holds even if a path got past the model."""
    from lbfast.xdp.consts import Constants
    assert '-DPIN_DIR="/sys/fs/bpf/lbfast"' in Constants({"PIN_DIR": "/sys/fs/bpf/lbfast"}).cflags()
    for value in CORPUS:
        try:
            flags = Constants({"PIN_DIR": value}).cflags()
        except ValueError as e:
            assert "PIN_DIR" in str(e)
            continue
        flag = next(f for f in flags if f.startswith("-DPIN_DIR="))
        assert re.fullmatch(r'-DPIN_DIR="[A-Za-z0-9_./@+-]*"', flag), flag
