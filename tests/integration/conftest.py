"""conftest.py -- starts real ./ndingest servers on free loopback ports for the integration tests."""
import datetime
import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# NDINGEST_BIN runs the suite against another build (make asan) or under a wrapper (make memcheck).
BINARY = Path(os.environ.get("NDINGEST_BIN", ROOT / "ndingest"))
WRAPPER = os.environ.get("NDINGEST_WRAPPER", "").split()
# NDINGEST_MEMCHECK=1 (scripts/memcheck, under valgrind): every server runs with --workers 0,
# and the tests listed in MEMCHECK_EXCLUDED (they need several workers, or timings or RSS
# that valgrind's slowdown breaks) are skipped with their reason.
MEMCHECK = os.environ.get("NDINGEST_MEMCHECK", "") not in ("", "0")
_SEVERAL = "needs several worker processes (runs with --workers 0 under memcheck)"
_RSS = "measures a worker's RSS (valgrind's own memory swamps it; --workers 0 has no worker)"
_SLOW = "10,000 requests and ~100 MB of bodies within a deadline: too slow under valgrind"
MEMCHECK_EXCLUDED = {  # test function name -> why it cannot run under valgrind, --workers 0
    "test_startup_line": "checks the '2 workers' start-up line",
    "test_two_keepalive_connections_use_both_workers": _SEVERAL,
    "test_killed_worker_is_replaced": _SEVERAL,
    "test_sigterm_under_load_loses_no_acknowledged_row": _SEVERAL,
    "test_workers_exit_when_main_process_dies": _SEVERAL,
    "test_metrics_totals_across_workers": _SEVERAL,
    "test_metrics_codes_bytes_and_restarts": _SEVERAL,
    "test_quiet_keeps_errors_with_timestamps": _SEVERAL,
    "test_worker_killed_under_load": _SEVERAL,
    "test_main_killed_in_flight_request_still_acknowledged": _SEVERAL,
    "test_gzip_bomb_is_413_fast_with_bounded_memory": _RSS,
    "test_big_streamed_body_bounded_memory": _RSS,
    "test_big_body_of_wide_rows_or_invalid_lines": _RSS,
    "test_long_lines_bounded_by_max_line": _RSS,
    "test_workers_killed_under_load": _SEVERAL,
    "test_into_postgresql_with_cuts_and_kills": _SEVERAL,
    "test_connections_cut_at_random_points": _SLOW,
    "test_disk_fills_then_space_is_freed": _SLOW,
}


def memcheck_args(args):
    """args with any --workers N turned into --workers 0 (only under NDINGEST_MEMCHECK)."""
    args = list(args)
    if not MEMCHECK:
        return args
    out, i = [], 0
    while i < len(args):
        if args[i] == "--workers" and i + 1 < len(args):
            out += ["--workers", "0"]
            i += 2
            continue
        out.append(args[i])
        i += 1
    if "--workers" not in out:
        out += ["--workers", "0"]
    return out


def pytest_collection_modifyitems(config, items):
    if not MEMCHECK:
        return
    for item in items:
        name = item.nodeid.split("::", 1)[-1]
        reason = MEMCHECK_EXCLUDED.get(name) or MEMCHECK_EXCLUDED.get(name.split("[", 1)[0])
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"NDINGEST_MEMCHECK: {reason}"))


DATA = ROOT / "data" / "nyc_taxi.ndjson"
SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "nyc_taxi_example.ndjson"


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """One ndingest process; `files()` reads what it wrote."""

    def __init__(self, out_dir, args, host="127.0.0.1", env=None):
        self.host = host
        self.port = free_port(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        self.out_dir = Path(out_dir)
        listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.args = WRAPPER + [str(BINARY), "serve", "--listen", listen, "--out-dir", str(out_dir)] + memcheck_args(args)
        self.stderr_path = self.out_dir.parent / f"stderr-{self.port}.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     env=env)
        self.wait_ready()

    @property
    def url(self):
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}/"

    def wait_ready(self, timeout=60 if MEMCHECK else 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ndingest exited {self.proc.returncode}: {self.stderr()}")
            try:
                status, _, _ = self.request("GET", "/healthz", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("ndingest did not become ready: " + self.stderr())

    def connection(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path="/", body=None, headers=None, timeout=60):
        c = self.connection(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def post(self, body, headers=None, timeout=60):
        return self.request("POST", "/", body, headers, timeout)

    def stderr(self):
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def files(self, pattern="*.csv"):
        return sorted(self.out_dir.glob(pattern))

    def csv_bytes(self):
        return b"".join(p.read_bytes() for p in self.files("*.csv"))

    def _end(self, sig, timeout):
        """Signals the main process and waits; kills it (and raises) if it outlives timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self._end(sig, timeout)
        self._stderr.close()
        return self.proc.returncode

    def kill_all(self, workers):
        """For tests that stop processes by hand: whatever is left (the main process, the
        given worker pids) is SIGKILLed, and the server's stderr closed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for p in workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        self._stderr.close()


@pytest.fixture
def start_server(tmp_path):
    """start_server(*args) -> Server; every server is stopped (SIGTERM) at teardown and must exit 0."""
    servers = []

    def start(*args, host="127.0.0.1", out_dir=None, env=None):
        out = Path(out_dir) if out_dir else tmp_path / f"out{len(servers)}"
        s = Server(out, args, host=host, env=env)
        servers.append(s)
        return s

    yield start
    for s in servers:
        rc = s.stop()
        assert rc == 0, f"ndingest exited {rc} on SIGTERM: {s.stderr()}"
        # Workers' sanitizer reports (make asan) only reach their stderr: fail on them here.
        for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert mark not in s.stderr(), s.stderr()


@pytest.fixture
def server(start_server):
    """A default server: 2 workers, default columns, quarantine on."""
    return start_server("--workers", "2")


@pytest.fixture(scope="session")
def taxi_body():
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: run `make data`")
    return DATA.read_bytes()


# The server's own state in the out directory (doc/format.md, "Files"), beside the day files.
STATE_DIRS = (".inflight", ".idempotency")


def out_listing(out_dir):
    """The names in out_dir other than the server's state: the day files and whatever else
    was left there."""
    return sorted(p.name for p in Path(out_dir).iterdir() if p.name not in STATE_DIRS)


def today(utc=False):
    now = datetime.datetime.now(datetime.timezone.utc) if utc else datetime.datetime.now()
    return now.strftime("%Y-%m-%d")


def ok_response(nbytes, valid, invalid):
    return ('{"result": {"status": "ok", "stats": {"bytes": %d, "records": '
            '{"valid": %d, "invalid": %d, "total": %d}}}}' % (nbytes, valid, invalid, valid + invalid)).encode() + b"\n"


def read_response(f):
    """One HTTP response from a socket's makefile("rb"): (status, headers with lower-case
    names, body), or None when the server closed the connection first."""
    line = f.readline()
    if not line:
        return None
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = f.read(int(headers.get("content-length", "0")))
    return status, headers, body


def worker_pids(pid):
    """The child processes of pid (the workers of a server's main process)."""
    pids = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split()]
        except OSError:
            pass
    return sorted(pids)


def wait_for(predicate, timeout=30, what="condition"):
    """Polls predicate until it returns something true (returned), or fails after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def raw_connect(server, timeout=30):
    s = socket.create_connection((server.host, server.port), timeout=timeout)
    return s, s.makefile("rb")


def assert_closed(sock, f, timeout=10):
    """The server closes the connection: EOF (or a reset) before anything else arrives."""
    sock.settimeout(timeout)
    try:
        assert f.read(1) == b""
    except ConnectionResetError:
        pass


@pytest.fixture(scope="module")
def clickhouse(tmp_path_factory):
    """A ClickHouse server (tests/integration/clickhouse.py) for the whole module, stopped and
    its data removed at the end; the module's tests skip, saying why, where none is installed."""
    import clickhouse as ch
    if ch.SERVER is None:
        pytest.skip("clickhouse-server is not installed (scripts/install-deps.sh installs it)")
    server = ch.ClickHouse(tmp_path_factory.mktemp("clickhouse"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clickhouse_cluster(tmp_path_factory):
    """ZooKeeper and two ClickHouse servers as the two-shard cluster `ndingest`
    (tests/integration/clickhouse.py, Cluster) for the whole module: cluster.servers[i] has
    http_port and query(); all stopped and their data removed at the end, also after a failed
    test. The module's tests skip, saying why, where ZooKeeper or ClickHouse is missing."""
    import clickhouse as ch
    why = ch.zookeeper_missing()
    if why:
        pytest.skip(why)
    cluster = ch.Cluster(tmp_path_factory.mktemp("cluster"))
    print(f"cluster started: zookeeper {cluster.start_seconds['zookeeper']:.2f} s, "
          f"two clickhouse-servers {cluster.start_seconds['clickhouse']:.2f} s")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A PostgreSQL 15 server (tests/integration/postgres.py) for the whole module, stopped
    and its directory removed at the end (also when a test fails); the module's tests skip,
    saying why, where none is installed."""
    import postgres as pgmod
    if not pgmod.INSTALLED:
        pytest.skip("PostgreSQL 15 is not installed (scripts/install-deps.sh installs "
                    "postgresql and libpq-dev)")
    server = pgmod.PostgreSQL(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()
