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
import socket
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

    def __init__(self, root, ready_timeout=90, attempts=3, ports=None, extra_config="",
                 users=None, readonly_users=(), log_level="information"):
        self.root = Path(root)
        self.proc = None
        # A cluster member (Cluster below) comes with its ports chosen, since its peers'
        # config names them, and with the XML that makes it one; a port taken then is the
        # cluster's to retry (_PortTaken), with new ports for every member.
        self.ports, self.extra_config = ports, extra_config
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
                if ports is not None:
                    raise
                if attempt == attempts - 1:
                    raise RuntimeError("clickhouse-server: ports taken on every attempt: "
                                       + self.log_tail()) from None

    def _start(self, ready_timeout):
        for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if self.ports is not None:
            self.http_port, self.tcp_port = self.ports[:2]
        else:
            self.http_port, self.tcp_port = free_port(), free_port()
            while self.tcp_port == self.http_port:
                self.tcp_port = free_port()
        for name in ("server.log", "server.err.log"):  # this attempt's messages only
            (self.root / "log" / name).unlink(missing_ok=True)
        (self.root / "users.xml").write_text(_users_xml(self.users, self.readonly_users))
        config = self.root / "config.xml"
        config.write_text(CONFIG.format(root=self.root, http_port=self.http_port,
                                        tcp_port=self.tcp_port, log_level=self.log_level)
                          .replace("</yandex>", self.extra_config + "</yandex>"))
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
            # surrogateescape: bytes that are not UTF-8 (a string literal's \xff) go as sent
            body = sql.encode("utf-8", "surrogateescape")
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
        return listening(self.proc.pid)

    def restart(self, ready_timeout=90):
        """stop() keeping the data, and start again on the same ports (a server that comes
        back, as a fault test wants it)."""
        self.stop(remove=False)
        if self.ports is None:
            self.ports = (self.http_port, self.tcp_port)
        self._start(ready_timeout)

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


def listening(pid):
    """The (address, port) pairs the process pid listens on (IPv4 and IPv6, from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
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


# MARK: - A two-shard cluster with ZooKeeper
#
# ZooKeeper coordinates ReplicatedMergeTree (its block checksums are what drop a resent
# INSERT, the property delivery's exactly-once rests on) and ON CLUSTER DDL. Debian's
# `zookeeper` package is run standalone by hand, as its zkServer.sh would, but in a
# directory of ours on a free loopback port.

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
# zookeeper.jar's manifest names its other jars; slf4j-simple (libslf4j-java, a dependency of
# libzookeeper-java) makes it log to stderr, which a failed start's message then quotes.
ZOOKEEPER_CLASSPATH = ZOOKEEPER_JAR + ":/usr/share/java/slf4j-simple.jar"
JAVA = shutil.which("java")

ZOO_CFG = """tickTime=500
dataDir={root}/data
clientPort={port}
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr
"""
# admin.enableServer=false: no AdminServer on 8080. tickTime 500 ms lets a client ask for
# sessions as short as 1 s (2 ticks); ClickHouse asks for CLUSTER_SESSION_TIMEOUT_MS.
CLUSTER_SESSION_TIMEOUT_MS = 5000


def zookeeper_missing():
    """Why this machine cannot run the cluster, or None."""
    if SERVER is None:
        return "clickhouse-server is not installed (scripts/install-deps.sh installs it)"
    if JAVA is None or not os.path.exists(ZOOKEEPER_JAR):
        return "zookeeper (and java) are not installed (scripts/install-deps.sh installs them)"
    return None


class ZooKeeper:
    """One standalone ZooKeeper in the directory root on a free 127.0.0.1 port. Ready when
    the four-letter `ruok` answers `imok` and `srvr` says it serves. stop() and start() again keep the port and the
    data (a restart, as an outage test wants it). Raises RuntimeError with the log's tail."""

    def __init__(self, root, ready_timeout=60, attempts=3):
        self.root = Path(root)
        self.proc = None
        self.port = None
        for attempt in range(attempts):
            try:
                self.start(ready_timeout)
                return
            except _PortTaken:
                self.port = None
                if attempt == attempts - 1:
                    raise RuntimeError("zookeeper: ports taken on every attempt: "
                                       + self.log_tail()) from None

    def start(self, ready_timeout=60):
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        (self.root / "zoo.cfg").write_text(ZOO_CFG.format(root=self.root, port=self.port))
        self._log = open(self.root / "zookeeper.log", "ab")
        # A small serial-GC heap and the client compiler: a quarter of the start-up time of
        # the default JVM on a loaded 2-core machine, and ample for a test's few znodes.
        self.proc = subprocess.Popen(
            [JAVA, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-Dzookeeper.jmx.log4j.disable=true", "-cp", ZOOKEEPER_CLASSPATH,
             "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(self.root / "zoo.cfg")],
            cwd=self.root, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                if "Address already in use" in self.log_tail():
                    raise _PortTaken()
                raise RuntimeError(f"zookeeper exited {self.proc.returncode}: " + self.log_tail())
            # ruok answers imok before the database is loaded, and a ClickHouse that connects
            # then is refused its handshake (18.16's DDLWorker has been seen to crash on it);
            # srvr answers with the version only once requests are served. A connection
            # accepted in the first half second of the JVM may go unanswered: a short timeout
            # retries it rather than waiting (5 s measured with timeout=5).
            serving = self.four_letter("ruok", timeout=0.5) == "imok" and (
                self.four_letter("srvr", timeout=0.5) or "").startswith("Zookeeper version")
            if serving:
                return
            time.sleep(0.05)
        self.stop(remove=False)
        raise RuntimeError(f"zookeeper did not answer ruok in {ready_timeout} s: "
                           + self.log_tail())

    def four_letter(self, word, timeout=5):
        """The answer to a four-letter command, or None when nothing answers."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.sendall(word.encode())
                s.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := s.recv(4096):
                    chunks.append(chunk)
                return b"".join(chunks).decode(errors="replace")
        except OSError:
            return None

    def listening(self):
        return listening(self.proc.pid)

    def log_tail(self, nbytes=4000):
        p = self.root / "zookeeper.log"
        return "[zookeeper.log] " + (p.read_bytes()[-nbytes:].decode(errors="replace")
                                     if p.exists() else "(none)")

    def stop(self, remove=True, timeout=30):
        """SIGTERM, then SIGKILL past timeout; remove=True deletes the data (the log stays)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and not self._log.closed:
            self._log.close()
        if remove:
            shutil.rmtree(self.root / "data", ignore_errors=True)


def _cluster_xml(name, zk_port, me, members):
    """The config that makes the server `me` (shard index) one shard of the cluster `name`:
    its interserver port, ZooKeeper, its {shard}/{replica} macros, every member's TCP port,
    and the queue ON CLUSTER statements go through."""
    shards = "".join(
        f"<shard><internal_replication>true</internal_replication><replica>"
        f"<host>127.0.0.1</host><port>{tcp}</port></replica></shard>"
        for _, tcp, _ in members)
    return f"""
  <interserver_http_port>{members[me][2]}</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <zookeeper>
    <node><host>127.0.0.1</host><port>{zk_port}</port></node>
    <session_timeout_ms>{CLUSTER_SESSION_TIMEOUT_MS}</session_timeout_ms>
  </zookeeper>
  <macros><shard>{me + 1:02d}</shard><replica>r1</replica></macros>
  <remote_servers><{name}>{shards}</{name}></remote_servers>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
"""


class Cluster:
    """ZooKeeper and `shards` clickhouse-servers (one replica each, macros shard 01, 02, ...,
    replica r1) forming the cluster `name`, each in its own directory under root. servers[i]
    is a ClickHouse (query(), rows(), count(), http_port). start_seconds says what the start
    cost: {"zookeeper": s, "clickhouse": s}. stop() ends them all; a failed start stops what
    it started before raising."""

    def __init__(self, root, name="ndingest", shards=2, ready_timeout=120, attempts=3):
        self.root, self.name = Path(root), name
        self.zookeeper, self.servers, self.start_seconds = None, [], {}
        try:
            t0 = time.monotonic()
            self.zookeeper = ZooKeeper(self.root / "zookeeper", ready_timeout)
            t1 = time.monotonic()
            self._start_servers(shards, ready_timeout, attempts)
            self.start_seconds = {"zookeeper": t1 - t0, "clickhouse": time.monotonic() - t1}
        except BaseException:
            self.stop(remove=False)
            raise

    def _start_servers(self, shards, ready_timeout, attempts):
        for attempt in range(attempts):
            taken = set()
            members = []
            for _ in range(shards):
                ports = []
                while len(ports) < 3:
                    p = free_port()
                    if p not in taken:
                        taken.add(p)
                        ports.append(p)
                members.append(tuple(ports))
            try:
                for i in range(shards):
                    self.servers.append(ClickHouse(
                        self.root / f"shard{i + 1:02d}", ready_timeout, ports=members[i],
                        extra_config=_cluster_xml(self.name, self.zookeeper.port, i, members)))
                for s in self.servers:
                    self._wait_zookeeper(s, ready_timeout)
                return
            except _PortTaken:
                for s in self.servers:
                    s.stop()
                self.servers = []
                if attempt == attempts - 1:
                    raise RuntimeError("clickhouse-server: cluster ports taken on every attempt")

    def _wait_zookeeper(self, server, timeout):
        """Until the server reads ZooKeeper: a replicated table created before that is
        refused (or, on 18.16, read-only)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                server.query("SELECT count() FROM system.zookeeper WHERE path = '/'", timeout=10)
                return
            except (ClickHouseError, OSError) as e:
                if time.monotonic() > deadline or server.proc.poll() is not None:
                    raise RuntimeError(f"clickhouse-server on {server.http_port} does not reach "
                                       f"ZooKeeper on {self.zookeeper.port}: {e}\n"
                                       + server.log_tail() + "\n" + self.zookeeper.log_tail())
            time.sleep(0.1)

    def stop(self, remove=True):
        for s in self.servers:
            s.stop(remove=remove)
        if self.zookeeper is not None:
            self.zookeeper.stop(remove=remove)
