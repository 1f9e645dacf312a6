"""The wheel is the whole program: built from a clean clone it holds every package and every
BPF source, and once installed in a fresh environment (the clone deleted, cwd elsewhere) it
runs the XDP data plane end to end."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from tests.lbrun import Daemon
from tests.test_daemon_xdp import config, fetch, xdp_testbed  # noqa: F401 - the fixture
from tests.wheel_build import ROOT, built_wheel


def source_packages() -> set[str]:
    """Every directory of lbfast/ and control/ that holds an __init__.py, as a dotted name."""
    return {str(p.parent.relative_to(ROOT)).replace("/", ".")
            for top in ("lbfast", "control") for p in (ROOT / top).rglob("__init__.py")}


@pytest.fixture(scope="module")
def wheel() -> Path:
    return built_wheel()


def test_wheel_holds_every_package_and_bpf_source(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {n.rpartition("/")[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages == source_packages()
    bpf = {p.name for p in (ROOT / "bpf").iterdir() if p.suffix in (".c", ".h")}
    assert {n.removeprefix("lbfast/bpf_src/") for n in names if n.startswith("lbfast/bpf_src/")} == bpf
    for ext in ("lbfast/_maglev", "lbfast/_proxy_header", "lbfast/_tcpprobe", "lbfast/l7/_http", "lbfast/l7/_cookie"):
        assert any(n.startswith(ext + ".") and n.endswith(".so") for n in names), ext
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "lbfast = control.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed; its dependencies (and bcc,
    linked as `make setup` does) come from the project venv through a .pth line."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "lbfast-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([venv / "bin/python", "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
                   check=True)
    return venv


def outside_env() -> dict:
    """No PYTHONPATH: the installed lbfast must import nothing from the checkout."""
    return {"PYTHONPATH": ""}


@pytest.mark.xdp
def test_installed_wheel_runs_xdp_from_elsewhere(installed, xdp_testbed, tmp_path):  # noqa: F811
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([installed / "bin/python", "-c",
                            "import lbfast, control; from lbfast.xdp.consts import BPF_DIR; "
                            "print(lbfast.__file__, control.__file__, BPF_DIR, sep='\\n')"],
                           check=True, capture_output=True, text=True, cwd=elsewhere,
                           env={**os.environ, **outside_env()}).stdout.split()
    assert all(p.startswith(str(installed)) for p in where), where
    tb, pin_dir = xdp_testbed
    d = Daemon(tmp_path, config(tb, pin_dir), wrap=["ip", "netns", "exec", tb.lb.name],
               command=[str(installed / "bin/lbfast")], cwd=elsewhere, env=outside_env())
    try:
        assert d.status()["dataplane"]["name"] == "xdp"
        assert Counter(fetch(tb) for _ in range(20)) == {"b0": 10, "b1": 10}
        assert [f["total"] for f in d.stats()["frontends"] if f["name"] == "http"] == [20]
    finally:
        d.close()
