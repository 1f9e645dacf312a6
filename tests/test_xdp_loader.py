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


def test_a_pin_whose_fields_moved_is_replaced_though_its_size_is_the_same(caplog):
    """Sizes alone cannot tell a reordered struct: the loader records each map's field
    layout in the `layouts` pin and replaces a map whose recorded layout differs."""
    import ctypes as ct

    from control.testbed import Testbed
    from lbfast.xdp import XdpDataplane, remove_pins
    from lbfast.xdp.maps import MAP_BY_NAME

    pin_dir = f"/sys/fs/bpf/lbfast-layouts-{os.getpid()}"
    try:
        with Testbed(backends=0) as tb:
            dp = tb.lb.in_ns(lambda: XdpDataplane([], pin_dir=pin_dir))
            spec = MAP_BY_NAME["conntrack"]
            key = ct.c_uint64(spec.name_digest())
            assert dp.maps["layouts"].get(key).value == spec.layout_digest(dp.consts)
            dp.maps["layouts"].set(key, ct.c_uint64(12345))     # as an older version left it
            dp.close()
            conntrack_inode = os.stat(os.path.join(pin_dir, "conntrack")).st_ino
            sticky_inode = os.stat(os.path.join(pin_dir, "sticky")).st_ino

            with caplog.at_level("WARNING", logger="lbfast.xdp"):
                tb.lb.in_ns(lambda: XdpDataplane([], pin_dir=pin_dir)).close()
            assert "conntrack" in caplog.text and "fields moved" in caplog.text
            assert os.stat(os.path.join(pin_dir, "conntrack")).st_ino != conntrack_inode
            assert os.stat(os.path.join(pin_dir, "sticky")).st_ino == sticky_inode
    finally:
        remove_pins(pin_dir)
