"""Source ports of the LB host's own connections to servers (health checks): a range the
XDP program never gives a client flow.

The XDP program keeps a client's source port as its SNAT port when it can
(bpf/conntrack.h), and its SNAT address is by default the one the host's own connections
to that server leave from. A health check on a kernel-chosen ephemeral port could then
take the 4-tuple of a live client flow: the server would read its SYN as part of that
flow and the check would time out, marking a healthy server down on a busy LB. Checks
leave from this range instead (IP_LOCAL_PORT_RANGE, per socket), and the program passes
over a client port inside it. They end with RST, so no TIME_WAIT holds a port and a
small range is plenty. The kernel only narrows its own ephemeral range with the option
(32768-60999 unless net.ipv4.ip_local_port_range says otherwise), so the range is its top.
"""
import errno
import logging
import socket
import struct

HOST_PORT_MIN, HOST_PORT_MAX = 57000, 60999
IP_LOCAL_PORT_RANGE = 51    # linux/in.h, Linux 6.3; Python 3.11's socket module lacks it
PORT_RANGE_VALUE = HOST_PORT_MIN | HOST_PORT_MAX << 16   # the option's u32: low | high << 16

log = logging.getLogger("lbfast.hostports")
_unsupported_logged = False


def use_host_ports(sock: socket.socket) -> None:
    """Make a not yet connected socket take its source port from the host range. On a
    kernel without the option (before 6.3) the kernel's own range stays, said once."""
    global _unsupported_logged
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, struct.pack("I", PORT_RANGE_VALUE))
    except OSError as e:
        if e.errno != errno.ENOPROTOOPT:
            raise
        if not _unsupported_logged:
            _unsupported_logged = True
            log.warning("this kernel has no IP_LOCAL_PORT_RANGE: health checks take "
                        "ephemeral ports, which may collide with XDP flows' SNAT ports")
