"""`make install` / `make uninstall` in a scratch root laid out like a host: the venv with
bcc importable, `lbfast` on PATH, a unit `systemd-analyze verify` accepts, /etc/lbfast 0700
with a valid starting config; uninstall leaves the root as it was, keeping a changed config."""
import os
import subprocess
from pathlib import Path

import pytest

from tests.wheel_build import ROOT, built_wheel

HOST_DIRS = ("opt", "usr/local/sbin", "etc/systemd/system")


def snapshot(root: Path) -> list[tuple]:
    return sorted((str(p.relative_to(root)), p.lstat().st_mode, os.readlink(p) if p.is_symlink() else "")
                  for p in root.rglob("*"))


def make(target: str, root: Path) -> subprocess.CompletedProcess:
    dirs = {"VENV_DIR": root / "opt/lbfast", "SBINDIR": root / "usr/local/sbin",
            "UNITDIR": root / "etc/systemd/system", "CONFDIR": root / "etc/lbfast"}
    return subprocess.run(["make", "-s", "-C", str(ROOT), target, f"WHEEL={built_wheel()}",
                           *(f"{k}={v}" for k, v in dirs.items())],
                          check=True, capture_output=True, text=True)


@pytest.fixture
def host_root(tmp_path) -> Path:
    root = tmp_path / "root"
    for d in HOST_DIRS:
        (root / d).mkdir(parents=True)
    return root


def test_install_then_uninstall(host_root, tmp_path):
    before = snapshot(host_root)
    make("install", host_root)
    lbfast = host_root / "usr/local/sbin/lbfast"
    assert os.readlink(lbfast) == str(host_root / "opt/lbfast/bin/lbfast")
    elsewhere = dict(cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert subprocess.run([lbfast, "--version"], check=True, **elsewhere).stdout == "lbfast 0.1.0\n"
    subprocess.run([host_root / "opt/lbfast/bin/python", "-c", "import bcc"], check=True, **elsewhere)

    conf = host_root / "etc/lbfast"
    assert (conf.stat().st_mode & 0o777, (conf / "lbfast.json").stat().st_mode & 0o777) == (0o700, 0o600)
    assert "valid" in subprocess.run([lbfast, "check", "--config", conf / "lbfast.json"], check=True,
                                     **elsewhere).stdout
    unit = host_root / "etc/systemd/system/lbfast.service"
    assert f"ExecStart={lbfast} run --config {conf}/lbfast.json\n" in unit.read_text()
    verify = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    (conf / "lbfast.json").write_text('{"lbs": []}\n')      # the operator's own config stays
    out = make("uninstall", host_root).stdout
    assert f"kept {conf}" in out
    assert [p.name for p in conf.iterdir()] == ["lbfast.json"]
    (conf / "lbfast.json").unlink()
    conf.rmdir()
    assert snapshot(host_root) == before


def test_uninstall_of_an_untouched_install_removes_everything(host_root):
    before = snapshot(host_root)
    make("install", host_root)
    make("uninstall", host_root)
    assert snapshot(host_root) == before
