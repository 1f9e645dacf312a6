"""One wheel per test session, built as a user would: `pip wheel` of a fresh `git clone`
(what is committed, nothing built in place), with pip's default build isolation as
`make setup` uses. The clone is deleted once the wheel is built."""
import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def built_wheel() -> Path:
    work = Path(tempfile.mkdtemp(prefix="lbfast-wheel-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work), str(clone)],
                   check=True, cwd=work)
    shutil.rmtree(clone)
    (path,) = work.glob("lbfast-*.whl")
    return path
