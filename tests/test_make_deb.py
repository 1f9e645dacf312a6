"""`make deb` builds a Debian package lintian finds no error in (build-deb fails on one), with
the Debian dependencies declared, the unit, a private /etc/lbfast with its conffile, the
postinst, and a virtualenv that runs lbfast once the package's dependencies are there."""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def deb() -> Path:
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "deb"], check=True, capture_output=True, text=True)
    return ROOT / out.stdout.strip().splitlines()[-1]


def control(deb: Path) -> dict[str, str]:
    info = subprocess.run(["dpkg-deb", "-f", deb], check=True, capture_output=True, text=True).stdout
    return dict(re.findall(r"^(\S+): (.*(?:\n .*)*)$", info, re.M))


def contents(deb: Path) -> dict[str, str]:
    """path -> mode string (with the target for links)."""
    listing = subprocess.run(["dpkg-deb", "-c", deb], check=True, capture_output=True, text=True).stdout
    out = {}
    for line in listing.splitlines():
        mode, _, _, _, _, path = line.split(None, 5)
        path, _, target = path.partition(" -> ")
        out[path.removeprefix(".").rstrip("/") or "/"] = f"{mode} {target}".strip()
    return out


def test_declares_its_debian_dependencies(deb):
    fields = control(deb)
    assert (fields["Package"], fields["Version"], fields["Architecture"]) == ("lbfast", "0.1.0-1", "amd64")
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert "python3-bpfcc" in depends and "linux-headers-amd64 | linux-headers" in depends
    assert fields["Recommends"] == "keepalived, bird2"


def test_holds_the_unit_config_and_environment(deb):
    files = contents(deb)
    assert files["/usr/sbin/lbfast"] == "lrwxrwxrwx ../lib/lbfast/bin/lbfast"
    assert files["/lib/systemd/system/lbfast.service"] == "-rw-r--r--"
    assert (files["/etc/lbfast"], files["/etc/lbfast/lbfast.json"]) == ("drwx------", "-rw-------")
    site = "/usr/lib/lbfast/lib/python3.11/site-packages"
    bpf = {p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h")}
    assert {p.rpartition("/")[2] for p in files if p.startswith(f"{site}/lbfast/bpf_src/")} == bpf
    assert f"{site}/control/api/__init__.py" in files and f"{site}/bcc" in files
    assert not [p for p in files if "__pycache__" in p]
    control_files = subprocess.run(["dpkg-deb", "-I", deb, "conffiles", "postinst"], check=True,
                                   capture_output=True, text=True).stdout
    assert "/etc/lbfast/lbfast.json" in control_files
    assert "/usr/lib/lbfast/link-kernel-headers" in control_files
    assert "deb-systemd-helper enable 'lbfast.service'" in control_files or \
        "deb-systemd-helper unmask 'lbfast.service'" in control_files


def test_unpacked_environment_runs(deb, tmp_path):
    """Unpacked with its dependencies' paths pointing at this host's: python3, python3-bpfcc."""
    subprocess.run(["dpkg-deb", "-x", deb, tmp_path], check=True)
    for path in ("usr/bin/python3", "usr/lib/python3/dist-packages/bcc"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).symlink_to("/" + path)
    unit = (tmp_path / "lib/systemd/system/lbfast.service").read_text()
    assert "ExecStart=/usr/sbin/lbfast run --config /etc/lbfast/lbfast.json\n" in unit
    env = {**os.environ, "PYTHONPATH": ""}
    run = dict(check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    venv = tmp_path / "usr/lib/lbfast"
    script = (venv / "bin/lbfast").read_text()
    assert script.startswith("#!/usr/lib/lbfast/bin/python3\n")       # where the package puts it
    lbfast = [venv / "bin/python", venv / "bin/lbfast"]
    assert subprocess.run([*lbfast, "--version"], **run).stdout == "lbfast 0.1.0\n"
    assert "valid" in subprocess.run([*lbfast, "check", "--config", tmp_path / "etc/lbfast/lbfast.json"], **run).stdout
    where = subprocess.run([venv / "bin/python", "-c",
                            "import bcc, lbfast.xdp.consts as c; print(c.CONSTS_H.is_file(), c.BPF_DIR)"], **run).stdout
    assert where == f"True {tmp_path}/usr/lib/lbfast/lib/python3.11/site-packages/lbfast/bpf_src\n"
