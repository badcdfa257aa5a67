"""test_delivery_clickhouse_client.py -- the delivery's ClickHouse client (src/delivery/
clickhouse.c, table_check.c) held to a real 18.16 and to scripted HTTP servers, through the
test driver build/tests/clickhouse_probe (tests/tools/clickhouse_probe.c): the version,
DESCRIBE, gzip'd INSERTs that land their rows, every refusal classified as the server's code
says, tables too narrow for their definition, connection failures, 503 with Retry-After,
timeouts, and credentials that never appear in any output or log."""
import gzip
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
from base64 import b64decode
from email.utils import formatdate
from pathlib import Path

import pytest

import clickhouse as chmod
from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(os.environ.get("NDINGEST_PROBE", ROOT / "build" / "tests" / "clickhouse_probe"))

MARKER = "Mk7-secret-xyzzy"  # the password: must appear in no output and no log
WRITER, READER = "writer", "reader"


@pytest.fixture(scope="module")
def probe_bin():
    if not PROBE.exists() and "NDINGEST_PROBE" not in os.environ:
        subprocess.run(["make", "-C", str(ROOT), "tools"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not PROBE.exists():
        pytest.skip(f"{PROBE} is missing and `make tools` did not build it")
    return PROBE


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One 18.16 with two more users: writer (password MARKER) and reader (read-only)."""
    if chmod.SERVER is None:
        pytest.skip("clickhouse-server is not installed (scripts/install-deps.sh installs it)")
    s = chmod.ClickHouse(tmp_path_factory.mktemp("clickhouse"),
                         users={WRITER: MARKER, READER: MARKER + "r"},
                         readonly_users={READER}, log_level="trace")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    d = tmp_path_factory.mktemp("creds")
    files = {}
    for name, text in {"writer": f"{WRITER}:{MARKER}\n", "wrong": f"{WRITER}:{MARKER}-wrong\n",
                       "nobody": f"nobody:{MARKER}\n",
                       "reader": f"{READER}:{MARKER}r\n"}.items():
        p = d / name
        p.write_text(text)
        p.chmod(0o600)
        files[name] = str(p)
    return files


OUTPUTS = []  # every stdout and stderr the probe gave, for the marker check


def run_probe(probe, url, *args, creds="-", connect_ms=2000, timeout_ms=10000, env=None,
              lines=False):
    r = subprocess.run([str(probe), url, creds, str(connect_ms), str(timeout_ms), *args],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, **(env or {})})
    OUTPUTS.append(r.stdout + r.stderr)
    assert r.returncode in (0, 1), f"probe exited {r.returncode}: {r.stderr}"
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert out, f"probe printed nothing: {r.stderr}"
    return out if lines else out[0]


def ch_url(server, db="default"):
    return f"clickhouse://127.0.0.1:{server.http_port}/{db}"


def test_version(probe_bin, server):
    got = run_probe(probe_bin, ch_url(server), "version")
    want = server.query("SELECT version()").strip().split(".")
    assert got["result"] == "STORED", got
    assert (got["major"], got["minor"]) == (int(want[0]), int(want[1]))
    assert (got["major"], got["minor"]) == (18, 16), "the installed server is not Debian 12's"


def test_describe(probe_bin, server):
    server.query("CREATE TABLE d_exist (id UInt32, `we ird` Enum8('a''b' = 1, 'c' = 2), "
                 "n Nullable(Int64), m UInt64 MATERIALIZED id * 2, "
                 "lc LowCardinality(String)) ENGINE = MergeTree ORDER BY id",
                 **chmod.DDL_SETTINGS)
    got = run_probe(probe_bin, ch_url(server), "describe", "d_exist")
    assert got["result"] == "STORED", got
    # 18.16 lists MATERIALIZED columns last; the Enum's quote is unescaped from TSV.
    assert got["columns"] == [["id", "UInt32", ""], ["we ird", "Enum8('a\\'b' = 1, 'c' = 2)", ""],
                              ["n", "Nullable(Int64)", ""], ["lc", "LowCardinality(String)", ""],
                              ["m", "UInt64", "MATERIALIZED"]]
    missing = run_probe(probe_bin, ch_url(server), "describe", "d_missing")
    assert (missing["result"], missing["code"]) == ("TABLE", 60), missing
    nodb = run_probe(probe_bin, ch_url(server, "no_such_db"), "describe", "d_exist")
    assert (nodb["result"], nodb["code"]) == ("CONFIG", 81), nodb


def rows_csv(n, start=0):
    return "".join(f'{i},"name, {i} ""q""",{i % 7}\n' for i in range(start, start + n)).encode()


def test_insert_lands_rows(probe_bin, server, tmp_path):
    # The table has the columns in another order and one more, with a default: the INSERT
    # names the columns it sends.
    server.query("CREATE TABLE ins (extra String DEFAULT 'dflt', k UInt8, name String, "
                 "id UInt32) ENGINE = MergeTree ORDER BY id")
    body = tmp_path / "body.csv"
    body.write_bytes(rows_csv(5000))
    got = run_probe(probe_bin, ch_url(server), "insert", "ins", "id,name,k", str(body))
    assert got["result"] == "STORED", got
    assert server.count("ins") == 5000
    assert server.rows("SELECT sum(id) AS s, sum(k) AS k, uniqExact(name) AS u, "
                       "any(extra) AS e FROM ins") == [
        {"s": str(sum(range(5000))), "k": str(sum(i % 7 for i in range(5000))), "u": "5000",
         "e": "dflt"}]
    assert server.rows("SELECT name FROM ins WHERE id = 42") == [{"name": 'name, 42 "q"'}]


def test_same_body_twice_into_mergetree(probe_bin, server, tmp_path):
    """Plain MergeTree on 18.16 does not deduplicate: a resent batch is stored twice (at
    least once), even with insert_deduplicate=1 set."""
    server.query("CREATE TABLE twice (id UInt32, name String, k UInt8) "
                 "ENGINE = MergeTree ORDER BY id")
    body = tmp_path / "body.csv"
    body.write_bytes(rows_csv(100))
    got = run_probe(probe_bin, ch_url(server), "insert", "twice", "id,name,k", str(body),
                    env={"PROBE_REPEAT": "2"}, lines=True)
    assert [g["result"] for g in got] == ["STORED", "STORED"], got
    assert server.count("twice") == 200


def test_same_body_twice_into_replicated(probe_bin, server, tmp_path):
    if not hasattr(chmod, "ZooKeeper"):
        pytest.skip("no ZooKeeper in the harness yet (tests/integration/clickhouse.py has no "
                    "ZooKeeper class): ReplicatedMergeTree's deduplication is tested once it has")
    pytest.skip("ZooKeeper harness present but this server was started without it")


# Each refusal provoked on the real server: (table type, cell, code 18.16 answers).
REFUSALS = [
    ("Enum8('a' = 1, 'b' = 2)", "c", 49),  # unknown Enum value
    ("Enum16('a' = 1)", "zz", 49),
    ("UInt8", "abc", 117),  # the last cell: "expected end of line" (27 when inside a row)
    ("UInt8", "-1", 72),
    ("Date", "x", 38),
    ("DateTime", "x", 41),
    ("DateTime", "2020-01-01", 41),
    ("Decimal(5, 2)", "12345.6", 69),
    ("Decimal(5, 2)", "1.234", 69),
    ("Float64", "1.5x", 117),
    ("Int32", "\\N", 117),
    ("Array(String)", '"[\'a"', 26),
    ("Array(String)", '"[1]"', 26),
    ("Array(Int32)", '"[\'a\']"', 130),
    ("FixedString(2)", "abc", 131),
    ("UUID", "x", 376),
    ("String", '"x"y', 117),  # a bad quote
]


@pytest.mark.parametrize("ctype,cell,code", REFUSALS,
                         ids=[f"{c}-{t}" for t, _, c in REFUSALS])
def test_refusal_classified(probe_bin, server, tmp_path, ctype, cell, code):
    table = f"ref_{abs(hash((ctype, cell))) % 10**9}"
    server.query(f"CREATE TABLE {table} (id UInt32, c {ctype}) ENGINE = MergeTree ORDER BY id")
    body = tmp_path / "body.csv"
    body.write_bytes(f"1,{cell}\n".encode())
    got = run_probe(probe_bin, ch_url(server), "insert", table, "id,c", str(body))
    assert (got["result"], got["code"]) == ("REFUSED", code), got
    assert f"Code: {code}" in got["message"]
    assert server.count(table) == 0


@pytest.mark.parametrize("cells,code", [("1", 27), ("1,2,3", 117)], ids=["too-few", "too-many"])
def test_wrong_cell_count_refused(probe_bin, server, tmp_path, cells, code):
    table = f"cnt_{code}"
    server.query(f"CREATE TABLE IF NOT EXISTS {table} (id UInt32, c UInt8) "
                 "ENGINE = MergeTree ORDER BY id")
    body = tmp_path / "body.csv"
    body.write_bytes(f"{cells}\n".encode())
    got = run_probe(probe_bin, ch_url(server), "insert", table, "id,c", str(body))
    assert (got["result"], got["code"]) == ("REFUSED", code), got


def test_table_and_config_codes(probe_bin, server, tmp_path, creds):
    server.query("CREATE TABLE tc (id UInt32) ENGINE = MergeTree ORDER BY id")
    body = tmp_path / "body.csv"
    body.write_bytes(b"1\n")
    got = run_probe(probe_bin, ch_url(server), "insert", "tc_missing", "id", str(body))
    assert (got["result"], got["code"]) == ("TABLE", 60), got
    got = run_probe(probe_bin, ch_url(server), "insert", "tc", "id,nope", str(body))
    assert (got["result"], got["code"]) == ("TABLE", 16), got
    got = run_probe(probe_bin, ch_url(server, "no_such_db"), "insert", "tc", "id", str(body))
    assert (got["result"], got["code"]) == ("CONFIG", 81), got
    # insert_deduplication_token is ClickHouse >= 22.2's: 18.16 does not know the setting.
    got = run_probe(probe_bin, ch_url(server), "insert", "tc", "id", str(body), "tok")
    assert (got["result"], got["code"]) == ("CONFIG", 115), got
    got = run_probe(probe_bin, ch_url(server), "insert", "tc", "id", str(body),
                    creds=creds["reader"])
    assert (got["result"], got["code"]) == ("CONFIG", 164), got
    assert server.count("tc") == 0


def test_credentials(probe_bin, server, tmp_path, creds):
    server.query("CREATE TABLE cred (id UInt32) ENGINE = MergeTree ORDER BY id")
    body = tmp_path / "body.csv"
    body.write_bytes(b"1\n2\n")
    got = run_probe(probe_bin, ch_url(server), "insert", "cred", "id", str(body),
                    creds=creds["writer"])
    assert got["result"] == "STORED", got
    assert server.count("cred") == 2
    wrong = run_probe(probe_bin, ch_url(server), "insert", "cred", "id", str(body),
                      creds=creds["wrong"])
    assert (wrong["result"], wrong["code"]) == ("CONFIG", 193), wrong
    nobody = run_probe(probe_bin, ch_url(server), "version", creds=creds["nobody"])
    assert (nobody["result"], nobody["code"]) == ("CONFIG", 192), nobody
    assert server.count("cred") == 2
    # A password in the URL is refused before anything is sent.
    inurl = run_probe(probe_bin, f"clickhouse://{WRITER}:{MARKER}@127.0.0.1:"
                      f"{server.http_port}/default", "version")
    assert "open_error" in inurl
    # An unreadable or malformed credentials file: named, its content never shown.
    bad = tmp_path / "bad.cred"
    bad.write_text(MARKER + "\n")
    got = run_probe(probe_bin, ch_url(server), "version", creds=str(bad))
    assert str(bad) in got["open_error"]


class Scripted:
    """A tiny HTTP/1.1 server on a free loopback port: each request is answered by
    respond(request) -> (status, headers, body), or never when it returns None. Keeps
    connections alive; records (connection number, method, target, headers, body)."""

    def __init__(self, respond):
        self.respond = respond
        self.requests = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections),
                             daemon=True).start()

    def _serve(self, conn, number):
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip()
                           for k, v in (line.split(":", 1) for line in lines[1:])}
                length = int(headers.get("content-length", 0))
                while len(data) < length:
                    data += conn.recv(65536)
                body, data = data[:length], data[length:]
                self.requests.append((number, method, target, headers, body))
                answer = self.respond(self.requests[-1])
                if answer is None:
                    self.stop.wait(60)
                    return
                status, extra, text = answer
                out = f"HTTP/1.1 {status} X\r\nContent-Length: {len(text)}\r\n"
                out += "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "\r\n"
                conn.sendall(out.encode() + text)

    def close(self):
        self.stop.set()
        self.sock.close()

    @property
    def url(self):
        return f"clickhouse://127.0.0.1:{self.port}/db"


def test_request_shape(probe_bin, tmp_path, creds):
    """What goes on the wire: a POST whose URL holds the INSERT naming its columns and the
    settings but no credentials; Basic auth; the body gzip'd, the same bytes each time; one
    kept-alive connection for both."""
    srv = Scripted(lambda req: (200, {}, b""))
    try:
        body = tmp_path / "body.csv"
        body.write_bytes(rows_csv(300))
        got = run_probe(probe_bin, srv.url + "?table_suffix=_local", "insert", "t", "id,na`me,k",
                        str(body), creds=creds["writer"], env={"PROBE_REPEAT": "2"}, lines=True)
    finally:
        srv.close()
    assert [g["result"] for g in got] == ["STORED", "STORED"], got
    assert len(srv.requests) == 2 and srv.connections == 1, "the connection was not kept alive"
    (_, method, target, headers, sent), second = srv.requests[0], srv.requests[1]
    assert method == "POST"
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    assert q["query"] == ["INSERT INTO `db`.`t_local` (`id`, `na\\`me`, `k`) FORMAT CSV"]
    assert q["insert_deduplicate"] == ["1"]
    assert q["format_csv_allow_single_quotes"] == ["0"]
    assert q["input_format_allow_errors_num"] == ["0"]
    assert "insert_deduplication_token" not in q
    assert MARKER not in urllib.parse.unquote(target) and "password" not in target
    assert headers["content-encoding"] == "gzip"
    assert headers["authorization"].startswith("Basic ")
    assert b64decode(headers["authorization"][6:]).decode() == f"{WRITER}:{MARKER}"
    assert gzip.decompress(sent) == body.read_bytes()
    assert second[4] == sent, "the same batch was not gzip'd to the same bytes"
    assert len(sent) < len(body.read_bytes()) / 2


@pytest.mark.parametrize("when", ["seconds", "date", "bounded", "huge"])
def test_503_with_retry_after(probe_bin, tmp_path, when):
    value = {"seconds": "7", "bounded": "7", "huge": "999999999"}.get(
        when, formatdate(time.time() + 30, usegmt=True))
    env = {"PROBE_RETRY_AFTER_MAX_MS": "5000"} if when == "bounded" else {}
    srv = Scripted(lambda req: (503, {"Retry-After": value}, b"Service Unavailable\n"))
    try:
        body = tmp_path / "body.csv"
        body.write_bytes(b"1\n")
        got = run_probe(probe_bin, srv.url, "insert", "t", "id", str(body), env=env)
    finally:
        srv.close()
    assert (got["result"], got["http_status"], got["code"]) == ("RETRY", 503, 0), got
    if when == "seconds":
        assert got["retry_after_ms"] == 7000
    elif when == "bounded":
        assert got["retry_after_ms"] == 5000  # retry_after_max_ms
    elif when == "huge":
        assert got["retry_after_ms"] == 3600 * 1000  # the default bound
    else:
        assert 27000 <= got["retry_after_ms"] <= 31000, got


def test_server_codes_over_scripted_http(probe_bin, tmp_path, creds):
    """Codes that are hard to provoke on one small server (too many parts, read-only
    replica, memory, ZooKeeper), and a server quoting the password back: scrubbed."""
    answers = iter([
        (500, {}, b"Code: 252, e.displayText() = DB::Exception: Too many parts (300)\n"),
        (500, {}, b"Code: 242, e.displayText() = DB::Exception: Table is in readonly mode\n"),
        (500, {}, b"Code: 241, e.displayText() = DB::Exception: Memory limit exceeded\n"),
        (500, {}, b"Code: 999, e.displayText() = Coordination::Exception: Session expired\n"),
        (401, {}, f"Code: 193, e.displayText() = DB::Exception: Wrong password "
                  f"'{MARKER}' for user writer\n".encode()),
    ])
    srv = Scripted(lambda req: next(answers))
    try:
        body = tmp_path / "body.csv"
        body.write_bytes(b"1\n")
        got = [run_probe(probe_bin, srv.url, "insert", "t", "id", str(body),
                         creds=creds["writer"]) for _ in range(5)]
    finally:
        srv.close()
    assert [(g["result"], g["code"]) for g in got] == [
        ("RETRY", 252), ("RETRY", 242), ("RETRY", 241), ("RETRY", 999), ("CONFIG", 193)]
    assert MARKER not in got[4]["message"] and "***" in got[4]["message"], got[4]


def test_long_message_cut_between_characters(probe_bin, tmp_path):
    """A refusal quoting a row of multibyte text: the outcome's message (511 bytes at most)
    is cut between characters, so it stays UTF-8 for logs and JSON."""
    text = ("Code: 27, e.displayText() = DB::Exception: Cannot parse input: " + "é日" * 300)
    srv = Scripted(lambda req: (500, {}, text.encode()))
    try:
        body = tmp_path / "body.csv"
        body.write_bytes(b"1\n")
        r = subprocess.run([str(probe_bin), srv.url, "-", "1000", "5000", "insert", "t", "id",
                            str(body)], capture_output=True, timeout=60)
    finally:
        srv.close()
    got = json.loads(r.stdout.decode("utf-8"))  # strict: a cut character fails here
    assert got["result"] == "REFUSED"
    assert 400 < len(got["message"].encode()) <= 511
    assert got["message"].endswith(("é", "日"))


def test_connection_refused_is_retry(probe_bin, tmp_path):
    port = free_port()  # nothing listens there once free_port has closed it
    got = run_probe(probe_bin, f"clickhouse://127.0.0.1:{port}/db", "version")
    assert (got["result"], got["http_status"]) == ("RETRY", 0), got
    assert f"127.0.0.1:{port}" in got["message"]


def test_replicas_tried_in_order(probe_bin, server):
    """A shard's first replica refusing connections: the second answers."""
    port = free_port()
    got = run_probe(probe_bin, f"clickhouse://127.0.0.1:{port}|127.0.0.1:{server.http_port}/db",
                    "version")
    assert (got["result"], got["major"]) == ("STORED", 18), got


def test_silent_server_times_out(probe_bin, tmp_path):
    srv = Scripted(lambda req: None)
    try:
        body = tmp_path / "body.csv"
        body.write_bytes(b"1\n")
        got = run_probe(probe_bin, srv.url, "insert", "t", "id", str(body), timeout_ms=1500)
    finally:
        srv.close()
    assert (got["result"], got["http_status"]) == ("RETRY", 0), got
    assert 1400 <= got["elapsed_ms"] <= 4000, got
    assert "imeout" in got["message"] or "timed out" in got["message"], got


TRIPS = """SCHEMA >
    `id` UInt16 `json:$.id`,
    `kind` String `json:$.kind`,
    `n` Nullable(Int32) `json:$.n`,
    `at` DateTime `json:$.at`
"""


def test_table_check_against_describe(probe_bin, server, tmp_path):
    ds = tmp_path / "trips.datasource"
    ds.write_text(TRIPS)
    # 18.16 wraps what a narrower column cannot hold: the reason for the check.
    server.query("CREATE TABLE narrow (id UInt8, kind String, n Nullable(Int32), "
                 "at DateTime) ENGINE = MergeTree ORDER BY tuple()")
    server.query("INSERT INTO narrow (id, kind, at) FORMAT CSV", b"1000,a,2020-01-01 00:00:00\n")
    assert server.rows("SELECT id FROM narrow") == [{"id": 232}]
    got = run_probe(probe_bin, ch_url(server), "check", "narrow", str(ds))
    assert got["result"] == "STORED"
    assert got["problems"] == [["id", "UInt8 cannot hold every UInt16"]], got
    # Wider, another order, an Enum for the String, an extra column: fits.
    server.query("CREATE TABLE wide (extra UInt8 DEFAULT 1, at DateTime, "
                 "kind Enum8('a' = 1), n Nullable(Int64), id Int32) "
                 "ENGINE = MergeTree ORDER BY tuple()")
    got = run_probe(probe_bin, ch_url(server), "check", "wide", str(ds))
    assert got["problems"] == [], got
    # Missing column, non-Nullable for Nullable, Date for DateTime.
    server.query("CREATE TABLE bad (id UInt16, n Int32, at Date) "
                 "ENGINE = MergeTree ORDER BY tuple()")
    got = run_probe(probe_bin, ch_url(server), "check", "bad", str(ds))
    assert sorted(p[0] for p in got["problems"]) == ["at", "kind", "n"], got
    got = run_probe(probe_bin, ch_url(server), "check", "absent", str(ds))
    assert (got["result"], got["code"]) == ("TABLE", 60), got
    # The classic untyped dataset: every cell text, so String columns only.
    got = run_probe(probe_bin, ch_url(server), "check", "wide", "-kind,at")
    assert got["problems"] == [["at", "DateTime cannot hold every String"]], got


def test_marker_never_printed_nor_logged(probe_bin, server, creds):
    """Runs last in this file: every probe output above, and the server's logs, are free of
    the password (at the trace level 18.16 logs each request's URI: a password passed as a
    URL parameter would show)."""
    for name in ("writer", "wrong"):  # a login and a failed one, whatever ran before
        run_probe(probe_bin, ch_url(server), "version", creds=creds[name])
    for out in OUTPUTS:
        assert MARKER not in out, out
    logs = "".join(p.read_text(errors="replace") for p in (server.root / "log").glob("*.log"))
    assert "Wrong password" in logs and "Request URI: /?" in logs, \
        "the server's log shows neither failed logins nor URIs: is it the right log?"
    assert MARKER not in logs


def test_execute_create_table(probe_bin, server):
    """CREATE TABLE (--deliver-create) with LowCardinality: 18.16 needs a setting that the
    client adds once it knows the version, which it reads first."""
    got = run_probe(probe_bin, ch_url(server), "execute",
                    "CREATE TABLE ex_lc (a LowCardinality(String)) ENGINE = Memory")
    assert got["result"] == "STORED", got
    assert server.rows("DESCRIBE TABLE ex_lc")[0]["type"] == "LowCardinality(String)"


def test_connect_timeout(probe_bin):
    """A host that never completes the handshake: the listener's accept queue is full, so
    the kernel drops further SYNs; connect_ms bounds the wait."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the queue (never accepted)
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.2)
        got = run_probe(probe_bin, f"clickhouse://127.0.0.1:{port}/db", "version",
                        connect_ms=700, timeout_ms=20000)
    finally:
        for s in fillers:
            s.close()
        lsock.close()
    assert (got["result"], got["http_status"]) == ("RETRY", 0), got
    assert 600 <= got["elapsed_ms"] <= 3000, got
