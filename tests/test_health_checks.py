"""Every health check type against a real server started here: passes when the server is
healthy, fails when it answers wrong or is stopped, passes again once it is back."""
import asyncio
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
import uvloop

from control.health.checks import CheckResult, run_check
from control.testbed import stop_processes
from lbfast.enums import CheckType
from lbfast.hostports import HOST_PORT_MAX, HOST_PORT_MIN
from lbfast.spec import HealthCheckSpec

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(params=sorted(LOOPS))
def check(request):
    """check(port, type=..., **spec fields) -> CheckResult, on asyncio and on uvloop."""
    def run(port: int, address: str = "127.0.0.1", **fields) -> CheckResult:
        fields.setdefault("timeout_ms", 2000)
        with asyncio.Runner(loop_factory=LOOPS[request.param]) as runner:
            return runner.run(run_check(HealthCheckSpec(**fields), address, port))
    return run


def passes(result: CheckResult, *words: str) -> None:
    assert result.ok, result.reason
    for word in words:
        assert word in result.reason


def fails(result: CheckResult, *words: str) -> None:
    assert not result.ok, result.reason
    for word in words:
        assert word in result.reason, result.reason


# ---------------------------------------------------------------- server processes

class Daemon:
    """A server binary run by the tests on its own loopback port; stoppable and restartable."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path,
                 ready_line: str | None = None, user: str | None = None) -> None:
        self.name, self.argv, self.port, self.ready_line, self.user = name, argv, port, ready_line, user
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def log_tail(self, offset: int = 0) -> str:
        text = self.log_path.read_bytes()[offset:].decode(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-20:])

    def start(self, timeout: float = 20.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        as_user = dict(user=self.user, group=self.user, extra_groups=[]) if self.user else {}
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, **as_user)
        except OSError as e:
            pytest.fail(f"cannot start {self.name} ({self.argv[0]}): {e}; run `make setup`")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} at start:\n{self.log_tail(offset)}")
            logged = self.ready_line is None or self.ready_line in self.log_tail(offset)
            if logged and port_open(self.port):
                return
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"{self.name} not ready on port {self.port} within {timeout} s:\n{self.log_tail(offset)}")

    def stop(self) -> None:
        if self.proc:
            stop_processes([self.proc], grace=15)


def must_run(argv: list[str], what: str, **kw) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)
    except OSError as e:
        pytest.fail(f"{what}: cannot run {argv[0]}: {e}; run `make setup`")
    if done.returncode != 0:
        pytest.fail(f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


@pytest.fixture(scope="module")
def workdir():
    # Under /tmp and world-traversable: PostgreSQL runs as its own user.
    path = Path(tempfile.mkdtemp(prefix="lbfast-health-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def daemon_fixture(daemon: Daemon):
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def stopped_then_back(daemon: Daemon, check, **fields) -> None:
    daemon.stop()
    try:
        fails(check(daemon.port, **fields), "connect")
    finally:
        daemon.start()
    passes(check(daemon.port, **fields))


# ---------------------------------------------------------------- tcp

def test_tcp_connect_passes_and_refused_port_fails(check):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        passes(check(port, type=CheckType.TCP), "connected")
    fails(check(port, type=CheckType.TCP), "connect", "refused")


def test_tcp_on_ipv6_loopback(check):
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
        passes(check(listener.getsockname()[1], address="::1", type=CheckType.TCP))


def test_connect_check_leaves_from_the_host_port_range(check):
    """Checks take their source port from lbfast.hostports, where the XDP program never
    puts a client flow (so no check can collide with one on a server)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        passes(check(listener.getsockname()[1], type=CheckType.TCP))
        conn, peer = listener.accept()
        conn.close()
    assert HOST_PORT_MIN <= peer[1] <= HOST_PORT_MAX, peer


class ProxyLineRecorder(socketserver.StreamRequestHandler):
    """Records the first line (the PROXY header), then answers one HTTP request if sent."""

    def handle(self) -> None:
        self.server.lines.append(self.rfile.readline())
        if self.rfile.readline():
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


@pytest.fixture
def proxy_recorder():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), ProxyLineRecorder)
    server.daemon_threads = True
    server.lines = []
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("check_type", [CheckType.TCP, CheckType.HTTP])
def test_send_proxy_sends_a_v1_header_first(check, proxy_recorder, check_type):
    port = proxy_recorder.server_address[1]
    passes(check(port, type=check_type, send_proxy=True))
    deadline = time.monotonic() + 2
    while not proxy_recorder.lines and time.monotonic() < deadline:
        time.sleep(0.01)
    words = proxy_recorder.lines[0].decode().split()
    assert words[:3] == ["PROXY", "TCP4", "127.0.0.1"] and words[3] == "127.0.0.1"
    assert HOST_PORT_MIN <= int(words[4]) <= HOST_PORT_MAX and words[5] == str(port)


# ---------------------------------------------------------------- http, https, http_body

class CheckTarget(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    BODY = b"status: all systems go"

    def do_GET(self) -> None:
        self.server.seen.append((self.command, self.path, self.headers.get("Host")))
        path = self.path
        if path == "/ok":
            self.reply(200, self.BODY)
        elif path.startswith("/status/"):
            self.reply(int(path.removeprefix("/status/")), b"a status page")
        elif path == "/redirect":
            self.reply(302, b"", [("Location", "/ok")])
        elif path == "/slow":
            time.sleep(1.5)
            self.reply(200, self.BODY)
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"status: all sys", b"tems go"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/far":  # the match lies beyond what a check reads
            self.reply(200, b"x" * 200_000 + self.BODY)
        else:
            self.reply(404, b"not found")

    do_HEAD = do_GET

    def reply(self, code: int, body: bytes, headers=()) -> None:
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class QuietHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), CheckTarget)
        self.tls, self.seen, self.sni = tls, [], []

    def finish_request(self, request, client_address) -> None:
        if self.tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(5)
        try:  # handshake in the request thread, not in the accept loop
            tls_request = self.tls.wrap_socket(request, server_side=True)
        except OSError:
            return
        try:
            super().finish_request(tls_request, client_address)
        finally:
            tls_request.close()

    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out or hang up early are what some tests do

    @property
    def port(self) -> int:
        return self.server_address[1]


def serve(server: QuietHTTPServer):
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def http_server():
    yield from serve(QuietHTTPServer())


@pytest.fixture(scope="module")
def tls_ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def https_server(tls_ca):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_ca.issue_cert("lbfast.test", "127.0.0.1").configure_cert(context)
    server = QuietHTTPServer(context)
    context.sni_callback = lambda sslobj, name, ctx: server.sni.append(name)
    yield from serve(server)


@pytest.mark.parametrize("uri, code, ok", [
    ("/ok", None, True),
    ("/redirect", None, True),          # any 3xx counts when no code is set
    ("/status/204", None, True),
    ("/status/503", None, False),
    ("/status/404", None, False),
    ("/status/404", 404, True),         # an expected code is matched exactly
    ("/redirect", 200, False),
    ("/ok", 204, False),
])
def test_http_status_codes(check, http_server, uri, code, ok):
    result = check(http_server.port, type=CheckType.HTTP, http_uri=uri, http_code=code)
    assert result.ok is ok, result.reason


def test_http_sends_method_uri_and_host(check, http_server):
    passes(check(http_server.port, type=CheckType.HTTP, http_method="HEAD", http_uri="/ok"), "HTTP 200")
    passes(check(http_server.port, type=CheckType.HTTP, http_uri="/ok", http_host="app.lbfast.test"))
    assert http_server.seen[-2:] == [("HEAD", "/ok", f"127.0.0.1:{http_server.port}"),
                                     ("GET", "/ok", "app.lbfast.test")]


@pytest.mark.parametrize("uri, body, ok", [
    ("/ok", "all systems go", True),
    ("/ok", "all systems down", False),
    ("/chunked", "all systems go", True),   # the match spans two chunks
    ("/far", "all systems go", False),      # beyond the body limit of a check
    ("/status/503", "a status page", False),  # the body matches, the code does not
])
def test_http_body_match(check, http_server, uri, body, ok):
    result = check(http_server.port, type=CheckType.HTTP_BODY, http_uri=uri, http_body=body)
    assert result.ok is ok, result.reason
    if not ok and "body" in result.reason:
        assert "does not contain" in result.reason


def test_http_slow_answer_times_out(check, http_server):
    result = check(http_server.port, type=CheckType.HTTP, http_uri="/slow", timeout_ms=300)
    fails(result, "timeout after 300 ms")
    assert 0.25 < result.duration < 1.0


def test_http_server_stopped_fails_then_back(check):
    server = QuietHTTPServer()
    port = server.port
    for _ in serve(server):
        passes(check(port, type=CheckType.HTTP, http_uri="/ok"))
    fails(check(port, type=CheckType.HTTP, http_uri="/ok"), "connect")
    for _ in serve(QuietHTTPServer(port=port)):
        passes(check(port, type=CheckType.HTTP, http_uri="/ok"))


def test_http_check_of_a_non_http_server_fails(check):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def answer_garbage():
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                time.sleep(0.2)
        threading.Thread(target=answer_garbage, daemon=True).start()
        fails(check(listener.getsockname()[1], type=CheckType.HTTP), "invalid HTTP response")


def test_https_with_sni_and_no_verification(check, https_server):
    result = check(https_server.port, type=CheckType.HTTPS, http_uri="/ok", sni="lbfast.test",
                   http_host="lbfast.test")
    passes(result, "HTTP 200")
    assert https_server.sni[-1] == "lbfast.test"
    assert https_server.seen[-1] == ("GET", "/ok", "lbfast.test")


def test_https_body_and_code(check, https_server):
    passes(check(https_server.port, type=CheckType.HTTPS, http_uri="/ok", http_body="all systems go"))
    fails(check(https_server.port, type=CheckType.HTTPS, http_uri="/status/500"), "HTTP 500")


def test_https_verify_rejects_an_unknown_ca(check, https_server):
    fails(check(https_server.port, type=CheckType.HTTPS, http_uri="/ok", sni="lbfast.test",
                verify_tls=True), "tls", "certificate")


def test_https_check_of_a_plain_http_server_fails(check, http_server):
    fails(check(http_server.port, type=CheckType.HTTPS, http_uri="/ok"), "tls")


def test_checks_leave_no_socket_open(check, http_server, https_server):
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepts: checks time out
        check(silent.getsockname()[1], type=CheckType.HTTP, timeout_ms=20)  # warm up the loop
        before = open_fds()
        for _ in range(20):
            passes(check(http_server.port, type=CheckType.TCP))
            passes(check(http_server.port, type=CheckType.HTTP, http_uri="/ok"))
            passes(check(https_server.port, type=CheckType.HTTPS, http_uri="/ok"))
            fails(check(http_server.port, type=CheckType.HTTPS, http_uri="/ok"), "tls")
            fails(check(silent.getsockname()[1], type=CheckType.HTTPS, timeout_ms=20), "timeout")
        assert open_fds() <= before + 3


# ---------------------------------------------------------------- mysql

@pytest.fixture(scope="module")
def mariadb(workdir):
    home = workdir / "mariadb"
    home.mkdir()
    must_run(["mariadb-install-db", "--no-defaults", f"--datadir={home}/data", "--user=root",
              "--skip-test-db", "--auth-root-authentication-method=socket"], "mariadb-install-db")
    (home / "init.sql").write_text(
        "CREATE USER IF NOT EXISTS 'lbcheck'@'%';\n"
        "CREATE USER IF NOT EXISTS 'withpassword'@'%' IDENTIFIED BY 'secret';\n")
    port = free_port()
    yield from daemon_fixture(Daemon("mariadb", [
        "mariadbd", "--no-defaults", f"--datadir={home}/data", f"--socket={home}/sock",
        f"--pid-file={home}/pid", f"--port={port}", "--bind-address=127.0.0.1", "--user=root",
        "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
        # greeting-only checks count as aborted handshakes; tests run many
        "--max-connect-errors=1000000", f"--init-file={home}/init.sql",
    ], port, workdir, ready_line="ready for connections"))


def test_mysql_greeting(check, mariadb):
    passes(check(mariadb.port, type=CheckType.MYSQL), "MariaDB", "greeting")


def test_mysql_login_as_check_user(check, mariadb):
    passes(check(mariadb.port, type=CheckType.MYSQL, user="lbcheck"), "login ok")


@pytest.mark.parametrize("user", ["nosuchuser", "withpassword"])
def test_mysql_login_refused_fails(check, mariadb, user):
    fails(check(mariadb.port, type=CheckType.MYSQL, user=user), "mysql error", "Access denied", user)


def test_mysql_check_of_a_non_mysql_server_fails(check, http_server):
    # an HTTP server waits for a request: no greeting comes
    fails(check(http_server.port, type=CheckType.MYSQL, timeout_ms=200), "timeout")


def test_mysql_stopped_fails_then_back(check, mariadb):
    stopped_then_back(mariadb, check, type=CheckType.MYSQL, user="lbcheck")


# ---------------------------------------------------------------- pgsql

@pytest.fixture(scope="module")
def postgres(workdir):
    home = workdir / "postgres"
    home.mkdir()
    shutil.chown(home, "postgres", "postgres")
    must_run([str(PG_BIN / "initdb"), "-D", f"{home}/data", "-A", "trust", "-U", "postgres",
              "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"], "initdb", user="postgres",
             group="postgres", extra_groups=[])
    # scramuser asks for a password (the check passes on that request), everyone else is trusted
    (home / "data" / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all scramuser 127.0.0.1/32 scram-sha-256\n"
        "host all all 127.0.0.1/32 trust\n")
    port = free_port()
    yield from daemon_fixture(Daemon("postgres", [
        str(PG_BIN / "postgres"), "-D", f"{home}/data", "-p", str(port), "-k", str(home),
        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
    ], port, workdir, ready_line="database system is ready to accept connections", user="postgres"))


def test_pgsql_trusted_user_passes(check, postgres):
    passes(check(postgres.port, type=CheckType.PGSQL, user="postgres"), "ready for query")


def test_pgsql_authentication_request_passes(check, postgres):
    passes(check(postgres.port, type=CheckType.PGSQL, user="scramuser"), "auth request (SASL)")


def test_pgsql_unknown_user_fails_with_the_error(check, postgres):
    fails(check(postgres.port, type=CheckType.PGSQL, user="nosuchuser"), "28000", "nosuchuser")


def test_pgsql_without_user_fails(check, postgres):
    fails(check(postgres.port, type=CheckType.PGSQL), "needs a user")


def test_pgsql_stopped_fails_then_back(check, postgres):
    stopped_then_back(postgres, check, type=CheckType.PGSQL, user="postgres")


# ---------------------------------------------------------------- redis

def redis_daemon(workdir: Path, name: str, *extra: str) -> Daemon:
    port = free_port()
    return Daemon(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", str(workdir), *extra],
                  port, workdir, ready_line="Ready to accept connections")


@pytest.fixture(scope="module")
def redis(workdir):
    yield from daemon_fixture(redis_daemon(workdir, "redis"))


@pytest.fixture(scope="module")
def redis_with_password(workdir):
    yield from daemon_fixture(redis_daemon(workdir, "redis-auth", "--requirepass", "secret"))


def test_redis_ping_pong(check, redis):
    passes(check(redis.port, type=CheckType.REDIS), "PONG")


def test_redis_refusing_ping_fails(check, redis_with_password):
    fails(check(redis_with_password.port, type=CheckType.REDIS), "NOAUTH")


def test_redis_stopped_fails_then_back(check, redis):
    stopped_then_back(redis, check, type=CheckType.REDIS)


# ---------------------------------------------------------------- ldap

def slapd_daemon(workdir: Path, name: str, *global_directives: str) -> Daemon:
    home = workdir / name
    (home / "db").mkdir(parents=True)
    conf = home / "slapd.conf"
    conf.write_text("\n".join([
        "include /etc/ldap/schema/core.schema",
        "modulepath /usr/lib/ldap",
        "moduleload back_mdb",
        f"pidfile {home}/slapd.pid",
        f"argsfile {home}/slapd.args",
        *global_directives,
        "database mdb",
        "maxsize 10485760",
        'suffix "dc=lbfast,dc=test"',
        'rootdn "cn=admin,dc=lbfast,dc=test"',
        f"directory {home}/db",
    ]) + "\n")
    port = free_port()
    return Daemon(name, ["slapd", "-d", "0", "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/"],
                  port, workdir)


@pytest.fixture(scope="module")
def slapd(workdir):
    yield from daemon_fixture(slapd_daemon(workdir, "slapd"))


@pytest.fixture(scope="module")
def slapd_no_anonymous(workdir):
    yield from daemon_fixture(slapd_daemon(workdir, "slapd-no-anon", "disallow bind_anon"))


def test_ldap_anonymous_bind(check, slapd):
    passes(check(slapd.port, type=CheckType.LDAP), "ldap bind ok")


def test_ldap_refused_bind_fails(check, slapd_no_anonymous):
    fails(check(slapd_no_anonymous.port, type=CheckType.LDAP), "ldap bind result 48",
          "inappropriateAuthentication")


def test_ldap_check_of_a_mysql_server_fails(check, mariadb):
    # a MySQL greeting is no LDAPMessage
    fails(check(mariadb.port, type=CheckType.LDAP), "ldap")


def test_ldap_stopped_fails_then_back(check, slapd):
    stopped_then_back(slapd, check, type=CheckType.LDAP)
