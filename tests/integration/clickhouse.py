"""clickhouse.py -- a throwaway ClickHouse server (Debian 12's 18.16) on free loopback ports,
in its own directory, for the tests that load ndingest's CSV into a real warehouse.

ClickHouse(directory) writes a config (127.0.0.1 only, UTC, its own data/tmp/log paths,
small caches), starts clickhouse-server and waits until /ping answers; query() speaks the
HTTP interface; stop() ends it and removes its data. The `clickhouse` fixture in conftest.py
gives one per test module. doc/datasets.md ("Loading into ClickHouse") says what 18.16
accepts, and why STRICT_CSV holds the settings it does.
"""
import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from conftest import free_port

# Debian puts the server in /usr/sbin, which is not on a non-root PATH.
SERVER = shutil.which("clickhouse-server") or (
    "/usr/sbin/clickhouse-server" if os.access("/usr/sbin/clickhouse-server", os.X_OK) else None)

# Settings for every load: a bad row fails the whole INSERT (18.16's defaults, said out loud
# so a changed default cannot skip rows), and a field starting with ' is text, not a
# single-quoted string running on to the next ' (18.16 allows single quotes by default).
STRICT_CSV = {
    "input_format_allow_errors_num": 0,
    "input_format_allow_errors_ratio": 0,
    "format_csv_allow_single_quotes": 0,
    "format_csv_allow_double_quotes": 1,
    "date_time_input_format": "basic",
}
# 18.16 refuses LowCardinality columns in CREATE TABLE without this.
DDL_SETTINGS = {"allow_experimental_low_cardinality_type": 1}

CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger>
    <level>{log_level}</level>
    <log>{root}/log/server.log</log>
    <errorlog>{root}/log/server.err.log</errorlog>
    <size>10M</size>
    <count>1</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <listen_try>0</listen_try>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>16</max_concurrent_queries>
  <mlock_executable>false</mlock_executable>
</yandex>
"""
# No interserver_http_port: without it 18.16 opens no third port. The profile keeps the
# server small on a shared 2-core machine.
USERS = """<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_threads>2</max_threads>
      <background_pool_size>2</background_pool_size>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


class ClickHouseError(Exception):
    """A query the server refused: code is ClickHouse's error code (27 cannot parse input,
    ...), or 0 when the response carried none; str() is the server's message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def _error_code(text):
    # "Code: 27, e.displayText() = DB::Exception: ..." (the HTTP interface's form)
    head = text.split(",", 1)[0]
    return int(head[len("Code: "):]) if head.startswith("Code: ") and head[6:].isdigit() else 0


class ClickHouse:
    """One clickhouse-server process in the directory root (its own; the logs stay there
    after stop()). Raises RuntimeError when the server exits or does not answer in time."""

    def __init__(self, root, ready_timeout=90, attempts=3, users=None, readonly_users=(),
                 log_level="information"):
        self.root = Path(root)
        self.proc = None
        # More users than "default": {name: password}; those in readonly_users may not write.
        self.users = dict(users or {})
        self.readonly_users = set(readonly_users)
        self.log_level = log_level  # "trace" logs each request's URI
        for attempt in range(attempts):
            try:
                self._start(ready_timeout)
                return
            except _PortTaken:
                # free_port() gave the port back before the server bound it; someone took it.
                if attempt == attempts - 1:
                    raise RuntimeError("clickhouse-server: ports taken on every attempt: "
                                       + self.log_tail()) from None

    def _start(self, ready_timeout):
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.http_port, self.tcp_port = free_port(), free_port()
        while self.tcp_port == self.http_port:
            self.tcp_port = free_port()
        for name in ("server.log", "server.err.log"):  # this attempt's messages only
            (self.root / "log" / name).unlink(missing_ok=True)
        (self.root / "users.xml").write_text(_users_xml(self.users, self.readonly_users))
        config = self.root / "config.xml"
        config.write_text(CONFIG.format(root=self.root, http_port=self.http_port,
                                        tcp_port=self.tcp_port, log_level=self.log_level))
        self._stdout = open(self.root / "log" / "stdout.log", "wb")
        self.proc = subprocess.Popen([SERVER, "--config-file", str(config)], cwd=self.root,
                                     stdin=subprocess.DEVNULL, stdout=self._stdout,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._stdout.close()
                if "Address already in use" in self.log_tail():
                    raise _PortTaken()
                raise RuntimeError(f"clickhouse-server exited {self.proc.returncode}: "
                                   + self.log_tail())
            try:
                with urllib.request.urlopen(self.url + "ping", timeout=5) as r:
                    if r.read() == b"Ok.\n":
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop(remove=False)
        raise RuntimeError("clickhouse-server did not answer /ping: " + self.log_tail())

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}/"

    def log_tail(self, nbytes=4000):
        """The end of the server's error log and stdout, for failure messages."""
        out = []
        for name in ("server.err.log", "stdout.log"):
            p = self.root / "log" / name
            if p.exists():
                out.append(f"[{name}] " + p.read_bytes()[-nbytes:].decode(errors="replace"))
        return "\n".join(out)

    def query(self, sql, data=None, timeout=120, **settings):
        """Runs one statement; returns the response body as text. With data (bytes), sql is
        an INSERT ... FORMAT X and data its rows. settings go along as query settings.
        Raises ClickHouseError with the server's code and message when it refuses."""
        params = {k: str(v) for k, v in settings.items()}
        # The whole result is computed before the status line is sent, so an error part way
        # through a SELECT is a 500, not text appended to a 200.
        params["wait_end_of_query"] = "1"
        if data is None:
            body = sql.encode()
        else:
            params["query"] = sql
            body = data
        req = urllib.request.Request(self.url + "?" + urllib.parse.urlencode(params),
                                     data=body, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace").strip()
            raise ClickHouseError(_error_code(text), text) from None

    def rows(self, sql, **settings):
        """A SELECT's rows as dicts (JSONEachRow): Decimals and floats as their exact text
        (str), 64-bit integers as str (ClickHouse quotes them), nan/inf as "nan"/"inf"."""
        settings.setdefault("output_format_json_quote_denormals", 1)
        text = self.query(sql + " FORMAT JSONEachRow", **settings)
        return [json.loads(line, parse_float=str) for line in text.splitlines() if line]

    def create_table(self, table, columns, engine="MergeTree ORDER BY tuple()"):
        """CREATE TABLE table from [(name, ClickHouse type)], names quoted as identifiers."""
        cols = ", ".join(f"`{name}` {ctype}" for name, ctype in columns)
        self.query(f"CREATE TABLE `{table}` ({cols}) ENGINE = {engine}", **DDL_SETTINGS)

    def count(self, table):
        return int(self.query(f"SELECT count() FROM `{table}`"))

    def load_csv(self, table, data, fmt="CSV", **settings):
        """INSERT data (bytes) into table under STRICT_CSV (plus settings); returns the
        number of rows the table gained. Empty data inserts nothing (18.16 calls an empty
        INSERT an error, 108 "No data to insert", but an empty day file is fine)."""
        if not data:
            return 0
        before = self.count(table)
        self.query(f"INSERT INTO `{table}` FORMAT {fmt}", data, **{**STRICT_CSV, **settings})
        return self.count(table) - before

    def unsupported(self, types):
        """{type: server's message} for each ClickHouse type this server cannot hold in a
        table (found by trying, so it holds for whichever version is installed)."""
        out = {}
        for i, t in enumerate(types):
            table = f"_probe_{os.getpid()}_{i}"
            try:
                self.create_table(table, [("c", t)], engine="Memory")
            except ClickHouseError as e:
                out[t] = str(e)
            else:
                self.query(f"DROP TABLE `{table}`")
        return out

    def listening(self):
        """The (address, port) pairs the server's process listens on (IPv4 and IPv6, from
        /proc), so a test can check it binds loopback and nothing else."""
        inodes = set()
        for fd in Path(f"/proc/{self.proc.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        found = []
        for name in ("tcp", "tcp6"):
            for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # 0A: TCP_LISTEN
                    addr, port = f[1].rsplit(":", 1)
                    found.append((_proc_addr(addr), int(port, 16)))
        return sorted(found)

    def stop(self, remove=True, timeout=60):
        """SIGTERM, then SIGKILL past timeout; remove=True deletes the data and tmp
        directories (the logs stay for a failed run's post-mortem)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._stdout.closed:
            self._stdout.close()
        if remove:
            for sub in ("data", "tmp"):
                shutil.rmtree(self.root / sub, ignore_errors=True)
        return self.proc.returncode


def _users_xml(users, readonly_users):
    """USERS with a user per {name: password} added (plain-text <password>, which 18.16
    compares as given), and a "readonly" profile when some user needs it."""
    from xml.sax.saxutils import escape
    if not users:
        return USERS
    entries = "".join(
        f"    <{name}>\n      <password>{escape(password)}</password>\n"
        f"      <networks><ip>127.0.0.1</ip></networks>\n"
        f"      <profile>{'readonly' if name in readonly_users else 'default'}</profile>\n"
        f"      <quota>default</quota>\n    </{name}>\n" for name, password in users.items())
    text = USERS.replace("  </users>", entries + "  </users>")
    if readonly_users:
        text = text.replace("  </profiles>",
                            "    <readonly><readonly>1</readonly></readonly>\n  </profiles>")
    return text


class _PortTaken(Exception):
    pass


def _die_with_parent():
    """In the child before exec: SIGKILL when the test process dies, so a killed pytest
    leaves no server behind (its own session keeps a terminal's ^C for our teardown)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _proc_addr(hexaddr):
    """/proc/net/tcp{,6}'s address (host-order 32-bit words in hex) as text."""
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    return str(ipaddress.IPv6Address(words))
