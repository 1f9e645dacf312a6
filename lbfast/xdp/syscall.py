"""The few bpf(2) commands lbfast needs, through ctypes: map element access (also in
batches), pinned-object lookup, object info and BPF_PROG_TEST_RUN. Map access does not
go through bcc so that it works on any fd (pinned maps of an earlier daemon too)."""
import ctypes as ct
import os

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long
SYS_BPF = 321  # x86_64

MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
OBJ_PIN, OBJ_GET = 6, 7
PROG_TEST_RUN = 10
PROG_GET_FD_BY_ID = 13
MAP_GET_FD_BY_ID = 14
OBJ_GET_INFO_BY_FD = 15
MAP_LOOKUP_BATCH = 24

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

MAP_TYPES = {"hash": 1, "array": 2, "percpu_array": 6, "lru_hash": 9}


class _MapElemAttr(ct.Structure):
    _fields_ = [("map_fd", ct.c_uint32), ("pad", ct.c_uint32), ("key", ct.c_uint64),
                ("value", ct.c_uint64), ("flags", ct.c_uint64)]


class _BatchAttr(ct.Structure):
    _fields_ = [("in_batch", ct.c_uint64), ("out_batch", ct.c_uint64), ("keys", ct.c_uint64),
                ("values", ct.c_uint64), ("count", ct.c_uint32), ("map_fd", ct.c_uint32),
                ("elem_flags", ct.c_uint64), ("flags", ct.c_uint64)]


class _ObjAttr(ct.Structure):
    _fields_ = [("pathname", ct.c_uint64), ("bpf_fd", ct.c_uint32), ("file_flags", ct.c_uint32)]


class _InfoAttr(ct.Structure):
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class _GetByIdAttr(ct.Structure):
    _fields_ = [("id", ct.c_uint32), ("next_id", ct.c_uint32), ("open_flags", ct.c_uint32)]


class _TestRunAttr(ct.Structure):
    _fields_ = [("prog_fd", ct.c_uint32), ("retval", ct.c_uint32),
                ("data_size_in", ct.c_uint32), ("data_size_out", ct.c_uint32),
                ("data_in", ct.c_uint64), ("data_out", ct.c_uint64),
                ("repeat", ct.c_uint32), ("duration", ct.c_uint32),
                ("ctx_size_in", ct.c_uint32), ("ctx_size_out", ct.c_uint32),
                ("ctx_in", ct.c_uint64), ("ctx_out", ct.c_uint64),
                ("flags", ct.c_uint32), ("cpu", ct.c_uint32), ("batch_size", ct.c_uint32)]


class MapInfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16)]


class ProgInfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8),
                ("jited_prog_len", ct.c_uint32), ("xlated_prog_len", ct.c_uint32),
                ("jited_prog_insns", ct.c_uint64), ("xlated_prog_insns", ct.c_uint64),
                ("load_time", ct.c_uint64), ("created_by_uid", ct.c_uint32),
                ("nr_map_ids", ct.c_uint32), ("map_ids", ct.c_uint64),
                ("name", ct.c_char * 16)]


class XdpMd(ct.Structure):
    """struct xdp_md, the context BPF_PROG_TEST_RUN passes to an XDP program."""
    _fields_ = [("data", ct.c_uint32), ("data_end", ct.c_uint32), ("data_meta", ct.c_uint32),
                ("ingress_ifindex", ct.c_uint32), ("rx_queue_index", ct.c_uint32),
                ("egress_ifindex", ct.c_uint32)]


def bpf(cmd: int, attr: ct.Structure) -> int:
    ret = _libc.syscall(SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    if ret < 0:
        err = ct.get_errno()
        raise OSError(err, f"bpf(cmd {cmd}): {os.strerror(err)}")
    return ret


def _addr(obj) -> int:
    return ct.addressof(obj) if obj is not None else 0


def lookup(fd: int, key, value) -> bool:
    """Fill `value` with the element at `key`; False when there is none."""
    try:
        bpf(MAP_LOOKUP_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value)))
    except FileNotFoundError:
        return False
    return True


def update(fd: int, key, value, flags: int = BPF_ANY) -> None:
    bpf(MAP_UPDATE_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value),
                                      flags=flags))


def delete(fd: int, key) -> bool:
    try:
        bpf(MAP_DELETE_ELEM, _MapElemAttr(map_fd=fd, key=_addr(key)))
    except FileNotFoundError:
        return False
    return True


def next_key(fd: int, key, out) -> bool:
    """The key after `key` (the first key when `key` is None) into `out`."""
    try:
        bpf(MAP_GET_NEXT_KEY, _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(out)))
    except FileNotFoundError:
        return False
    return True


def lookup_batch(fd: int, keys, values, count: int, in_batch, out_batch) -> tuple[int, bool]:
    """One BPF_MAP_LOOKUP_BATCH step: (elements filled, whether the map is done).
    `in_batch` is None for the first step; then pass the previous `out_batch`."""
    attr = _BatchAttr(in_batch=_addr(in_batch), out_batch=_addr(out_batch),
                      keys=_addr(keys), values=_addr(values), count=count, map_fd=fd)
    try:
        bpf(MAP_LOOKUP_BATCH, attr)
    except FileNotFoundError:  # ENOENT: this step reached the end
        return attr.count, True
    return attr.count, False


def obj_get(path: str) -> int:
    p = ct.create_string_buffer(os.fsencode(path))
    return bpf(OBJ_GET, _ObjAttr(pathname=ct.addressof(p)))


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    bpf(OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info),
                                      info=ct.addressof(info)))
    return info


def prog_info(fd: int) -> ProgInfo:
    info = ProgInfo()
    bpf(OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ct.sizeof(info),
                                      info=ct.addressof(info)))
    return info


def prog_fd_by_id(prog_id: int) -> int:
    return bpf(PROG_GET_FD_BY_ID, _GetByIdAttr(id=prog_id))


def prog_test_run(prog_fd: int, data: bytes, ifindex: int = 0, repeat: int = 1,
             out_size: int = 4096) -> tuple[int, bytes, int]:
    """Run an XDP program on one packet: (verdict, packet after the run, ns per run)."""
    data_in = ct.create_string_buffer(data, len(data))
    data_out = ct.create_string_buffer(out_size)
    ctx = XdpMd(data=0, data_end=len(data), ingress_ifindex=ifindex)
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(data), data_size_out=out_size,
                        data_in=ct.addressof(data_in), data_out=ct.addressof(data_out),
                        repeat=repeat, ctx_size_in=ct.sizeof(ctx), ctx_in=ct.addressof(ctx))
    bpf(PROG_TEST_RUN, attr)
    return attr.retval, data_out.raw[:attr.data_size_out], attr.duration
