"""The loader's handling of pinned maps: they outlive a dataplane, a restarted one reuses
them, and a pin whose layout no longer matches the program is replaced with a warning
instead of being fed to it."""
import os

import pytest

pytestmark = pytest.mark.xdp


def test_pins_outlive_the_dataplane_and_stale_ones_are_replaced(caplog):
    from control.testbed import Testbed
    from lbfast.xdp import XdpDataplane, remove_pins
    from lbfast.xdp.maps import MAPS

    pin_dir = f"/sys/fs/bpf/lbfast-loader-{os.getpid()}"
    try:
        with Testbed(backends=0) as tb:
            small = {"CONNTRACK_SIZE": 1024}
            tb.lb.in_ns(lambda: XdpDataplane([], pin_dir=pin_dir, constants=small)).close()
            assert sorted(os.listdir(pin_dir)) == sorted(m.name for m in MAPS)
            conntrack_inode = os.stat(os.path.join(pin_dir, "conntrack")).st_ino
            frontends_inode = os.stat(os.path.join(pin_dir, "frontends")).st_ino

            with caplog.at_level("WARNING", logger="lbfast.xdp"):
                dp = tb.lb.in_ns(lambda: XdpDataplane([], pin_dir=pin_dir))   # default size
            dp.close()
            assert "conntrack" in caplog.text and "layout changed" in caplog.text
            assert os.stat(os.path.join(pin_dir, "conntrack")).st_ino != conntrack_inode
            assert os.stat(os.path.join(pin_dir, "frontends")).st_ino == frontends_inode
    finally:
        remove_pins(pin_dir)
    assert not os.path.exists(pin_dir)
