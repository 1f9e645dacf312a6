# cython: language_level=3
"""TCP connect probes for thousands of servers in C: one epoll fd, each server's schedule
and in-flight socket in a C table, so a check costs the kernel's connect plus one tuple."""
from cpython.ref cimport PyObject, Py_INCREF, Py_DECREF
from libc.errno cimport errno, EALREADY, EINPROGRESS
from libc.stdlib cimport realloc, free
from libc.string cimport memset, memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from posix.unistd cimport close

cdef extern from "<stdint.h>":
    ctypedef unsigned int uint32_t
    ctypedef unsigned long long uint64_t

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct sockaddr_storage:
        pass
    int socket(int domain, int type, int protocol)
    int connect(int fd, const sockaddr *addr, socklen_t addrlen)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length)
    int getsockopt(int fd, int level, int name, void *value, socklen_t *length)
    int AF_INET, AF_INET6, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC, SOL_SOCKET, SO_LINGER, SO_ERROR
    struct linger:
        int l_onoff
        int l_linger

cdef extern from "<netinet/in.h>":
    int IPPROTO_IP
    struct in_addr:
        uint32_t s_addr
    struct in6_addr:
        pass
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    unsigned short htons(unsigned short)

cdef extern from "<sys/epoll.h>":
    union epoll_data_t "epoll_data":
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    int EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLLOUT, EPOLLONESHOT

cdef enum:
    IP_LOCAL_PORT_RANGE = 51  # linux/in.h (Linux 6.3): glibc's headers may not have it
    PROBE_TIMEOUT = -1  # the deadline passed before the connect finished (not an errno)
    EVENTS = 256
    IDLE = -1       # target.fd: no connect in flight
    FREE = -2       # target.fd: slot unused

TIMEOUT = PROBE_TIMEOUT

cdef struct Target:
    int fd
    uint32_t generation     # tells a stale epoll event from the current probe's
    PyObject *key           # owned reference; NULL when the slot is free
    sockaddr_storage addr
    socklen_t addrlen
    int family
    double interval, timeout
    double next_start, next_gap, started, deadline


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class TcpProber:
    """Checks targets on their own schedule: `add` one, call `run` when the epoll fd is
    readable or `run`'s returned delay has passed, `remove` it to stop (no fd is left)."""
    cdef Target *targets
    cdef Py_ssize_t size, count
    cdef int epfd
    cdef readonly double granularity   # starts are batched: a probe may start this much early
    cdef readonly uint32_t port_range  # IP_LOCAL_PORT_RANGE for every probe's socket, 0: none

    def __cinit__(self, double granularity=0.005, uint32_t port_range=0):
        self.targets = NULL
        self.size = self.count = 0
        self.granularity = granularity
        self.port_range = port_range
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1")

    def __dealloc__(self):
        self._close()

    def close(self):
        """Stop every probe and close the epoll fd (as when garbage collected)."""
        self._close()

    cdef void _close(self):
        cdef Py_ssize_t i
        for i in range(self.size):
            self._release(i)
        free(self.targets)
        self.targets = NULL
        self.size = 0
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    def fileno(self):
        return self.epfd

    def __len__(self):
        return self.count

    def add(self, object key, int family, bytes packed_ip, int port, unsigned int scope_id,
            double interval, double timeout, double first_delay, double first_gap):
        """Probe packed_ip:port first after first_delay s, then after first_gap s, then every
        interval s; returns the slot to `remove`. run() reports (key, errno or TIMEOUT, s)."""
        cdef Py_ssize_t slot, i
        cdef Target *t
        cdef sockaddr_in *v4
        cdef sockaddr_in6 *v6
        if self.epfd < 0:
            raise ValueError("the prober is closed")
        if family == AF_INET and len(packed_ip) != 4 or family == AF_INET6 and len(packed_ip) != 16:
            raise ValueError("packed_ip does not match the family")
        if family != AF_INET and family != AF_INET6:
            raise ValueError("family must be AF_INET or AF_INET6")
        for slot in range(self.size):
            if self.targets[slot].fd == FREE:
                break
        else:
            slot = self.size
            t = <Target *>realloc(self.targets, (self.size * 2 + 16) * sizeof(Target))
            if t == NULL:
                raise MemoryError()
            self.targets = t
            self.size = self.size * 2 + 16
            for i in range(slot, self.size):
                self.targets[i].fd = FREE
                self.targets[i].key = NULL
                self.targets[i].generation = 0
        t = &self.targets[slot]
        memset(&t.addr, 0, sizeof(sockaddr_storage))
        if family == AF_INET:
            v4 = <sockaddr_in *>&t.addr
            v4.sin_family = AF_INET
            v4.sin_port = htons(port)
            memcpy(&v4.sin_addr, <char *>packed_ip, 4)
            t.addrlen = sizeof(sockaddr_in)
        else:
            v6 = <sockaddr_in6 *>&t.addr
            v6.sin6_family = AF_INET6
            v6.sin6_port = htons(port)
            v6.sin6_scope_id = scope_id
            memcpy(&v6.sin6_addr, <char *>packed_ip, 16)
            t.addrlen = sizeof(sockaddr_in6)
        t.family = family
        t.interval, t.timeout = interval, timeout
        t.next_start = monotonic() + first_delay
        t.next_gap = first_gap
        t.fd = IDLE
        Py_INCREF(key)
        t.key = <PyObject *>key
        self.count += 1
        return slot

    def remove(self, Py_ssize_t slot):
        """Stop probing the target in `slot`, closing its in-flight connect if any."""
        if 0 <= slot < self.size:
            self._release(slot)

    cdef void _release(self, Py_ssize_t slot):
        cdef Target *t = &self.targets[slot]
        if t.fd == FREE:
            return
        if t.fd >= 0:
            close(t.fd)         # the last reference: epoll forgets it too
        t.fd = FREE
        t.generation += 1
        Py_DECREF(<object>t.key)
        t.key = NULL
        self.count -= 1

    cdef inline void _schedule_next(self, Target *t, double now) noexcept:
        # random phase first, then a steady interval; slower than that: no catch-up burst
        t.next_start += t.next_gap
        t.next_gap = t.interval
        if t.next_start < now:
            t.next_start = now

    cdef int _finish(self, list results, Target *t, int error, double now) except -1:
        close(t.fd)
        t.fd = IDLE
        t.generation += 1
        results.append((<object>t.key, error, now - t.started))
        self._schedule_next(t, now)
        return 0

    cdef int _start(self, list results, Py_ssize_t slot, double now) except -1:
        cdef Target *t = &self.targets[slot]
        cdef linger reset
        cdef epoll_event event
        cdef int error
        t.started = monotonic()
        t.fd = socket(t.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        if t.fd < 0:
            error = errno
            t.fd = IDLE
            results.append((<object>t.key, error, 0.0))
            self._schedule_next(t, now)
            return 0
        # SO_LINGER {on, 0 s} up front: the close sends RST, no TIME_WAIT on the checker
        reset.l_onoff, reset.l_linger = 1, 0
        setsockopt(t.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset))
        if self.port_range:     # unsupported (ENOPROTOOPT) leaves the kernel's range
            setsockopt(t.fd, IPPROTO_IP, IP_LOCAL_PORT_RANGE, &self.port_range,
                       sizeof(self.port_range))
        if connect(t.fd, <sockaddr *>&t.addr, t.addrlen) == 0:
            return self._finish(results, t, 0, monotonic())
        error = errno
        if error == EINPROGRESS:
            # a nearby server (loopback above all) may have answered within the first call:
            # asking again costs one syscall instead of epoll_ctl + epoll_wait + getsockopt
            if connect(t.fd, <sockaddr *>&t.addr, t.addrlen) == 0:
                return self._finish(results, t, 0, monotonic())
            error = errno
        if error != EALREADY and error != EINPROGRESS:
            return self._finish(results, t, error, monotonic())
        event.events = EPOLLOUT | EPOLLONESHOT
        event.data.u64 = (<uint64_t>t.generation << 32) | <uint64_t>slot
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, t.fd, &event) < 0:
            return self._finish(results, t, errno, monotonic())
        t.deadline = t.started + t.timeout
        return 0

    def run(self):
        """Reap finished connects, expire late ones, start the due ones; returns the results
        as (key, errno or 0 or TIMEOUT, seconds) and the delay until run() is due again
        (None with no target)."""
        cdef epoll_event events[EVENTS]
        cdef int n, i, error
        cdef socklen_t length
        cdef Py_ssize_t slot
        cdef Target *t
        cdef double now, wake
        cdef list results = []
        while True:
            n = epoll_wait(self.epfd, events, EVENTS, 0)
            if n <= 0:
                break
            now = monotonic()
            for i in range(n):
                slot = <Py_ssize_t>(events[i].data.u64 & 0xffffffffu)
                t = &self.targets[slot]
                if slot >= self.size or t.fd < 0 or t.generation != <uint32_t>(events[i].data.u64 >> 32):
                    continue
                error, length = 0, sizeof(error)
                if getsockopt(t.fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0:
                    error = errno
                self._finish(results, t, error, now)
            if n < EVENTS:
                break
        now = monotonic()
        wake = 1e300
        for slot in range(self.size):
            t = &self.targets[slot]
            if t.fd >= 0:
                if t.deadline <= now:
                    self._finish(results, t, PROBE_TIMEOUT, now)
                else:
                    wake = min(wake, t.deadline)
                    continue
            if t.fd == IDLE:
                if t.next_start <= now + self.granularity:
                    self._start(results, slot, now)
                    if t.fd >= 0:
                        wake = min(wake, t.deadline)
                        continue
                # starts due within the next granularity run then, early: never late
                wake = min(wake, t.next_start - self.granularity)
        if wake == 1e300:
            return results, None
        return results, max(wake - now, self.granularity)
