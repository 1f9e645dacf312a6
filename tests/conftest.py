"""Shared pytest set-up: netns/xdp skipping (failing under CI=true), testbed fixtures and
``free_port()`` for loopback tests.

- Tests marked ``netns`` (or using the ``testbed``/``testbed_factory`` fixtures, which
  adds the mark) are skipped when network namespaces are unusable (not root, no
  ``ip netns``); tests marked ``xdp`` also need bcc and kernel headers.
- With ``CI=true`` any skip of a ``netns``/``xdp`` test, whatever its cause, is reported
  as a failure: CI must run them.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import socket

import pytest

from control.testbed import Testbed, netns_unavailable_reason

ENV_MARKS = ("netns", "xdp")


def free_port(host: str = "127.0.0.1", type: int = socket.SOCK_STREAM) -> int:
    """A port that was free on ``host`` a moment ago (loopback tests)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, type) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


_xdp_reason: list[str | None] = []


def xdp_unavailable_reason() -> str | None:
    if _xdp_reason:
        return _xdp_reason[0]
    reason = netns_unavailable_reason()
    if reason is None and importlib.util.find_spec("bcc") is None:
        reason = "bcc (python3-bpfcc) not importable"
    if reason is None:
        build = f"/lib/modules/{platform.release()}/build/include"
        if not os.path.isdir(build):
            reason = f"no kernel headers at {build} (run `make setup`)"
    _xdp_reason.append(reason)
    return reason


def pytest_configure(config: pytest.Config) -> None:
    # also declared in pyproject.toml; repeated so this conftest works on its own
    config.addinivalue_line("markers", "netns: needs root and network namespaces")
    config.addinivalue_line("markers", "xdp: needs root, bcc and an XDP-capable kernel")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if {"testbed", "testbed_factory"} & set(getattr(item, "fixturenames", ())):
            if item.get_closest_marker("netns") is None:
                item.add_marker(pytest.mark.netns)
        reason = None
        if item.get_closest_marker("xdp") is not None:
            reason = xdp_unavailable_reason()
        if reason is None and item.get_closest_marker("netns") is not None:
            reason = netns_unavailable_reason()
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    rep = yield
    if rep.skipped and _ci() and not hasattr(rep, "wasxfail"):
        marks = [m for m in ENV_MARKS if item.get_closest_marker(m) is not None]
        if marks:
            why = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            rep.outcome = "failed"
            rep.longrepr = (f"CI=true: test marked {'/'.join(marks)} was skipped ({why}); "
                            f"netns/xdp tests must run in CI (root, `ip netns`, bcc, headers)")
    return rep


@pytest.fixture(name="free_port")
def _free_port_fixture():
    """The ``free_port`` helper as a fixture: ``def test_x(free_port): port = free_port()``."""
    return free_port


@pytest.fixture
def testbed():
    """Testbed(backends=2) with the backend servers (http/tcp echo/udp echo) up."""
    with Testbed(backends=2) as tb:
        tb.start_backend_servers()
        yield tb


@pytest.fixture
def testbed_factory():
    """``make(backends=2, servers=True, **kw)`` -> Testbed; all closed at teardown.

    ``servers``: True starts all backend servers (and waits for them), False none, or a
    tuple of kinds such as ``("http",)``.  Other keywords go to :class:`Testbed`.
    """
    made: list[Testbed] = []

    def make(backends: int = 2, servers: bool | tuple[str, ...] = True, **kw) -> Testbed:
        tb = Testbed(backends=backends, **kw)
        made.append(tb)
        if servers:
            tb.start_backend_servers() if servers is True else tb.start_backend_servers(servers)
        return tb

    yield make
    errors = []
    for tb in reversed(made):
        try:
            tb.close()
        except Exception as e:  # close everything, then report
            errors.append(e)
    if errors:
        raise errors[0]
