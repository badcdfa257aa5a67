"""test_datasets.py -- serve --datasets (issue #11): routing POST /v0/events?name=NAME between
several datasets under concurrent load, Tinybird's responses and error statuses, POST / on
--default-dataset, scoped tokens, per-dataset metrics, SIGHUP reloading the definitions
under load, and the quarantine's rows (doc/datasets.md, sections 4-6)."""
import csv
import gzip
import http.client
import io
import json
import os
import random
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import BINARY, ROOT, free_port, ok_response, today, wait_for, worker_pids

AUTH = "Authorization"

# Top-level paths only, so that routing is tested whatever the ingest's typing does.
EVENTS = """DESCRIPTION >
    Events with an id and a tag
SCHEMA >
    `id` Int64 `json:$.id`,
    `tag` String `json:$.tag`
"""


def define(d, name, text=EVENTS):
    d.mkdir(exist_ok=True)
    (d / f"{name}.datasource").write_text(text)


@pytest.fixture
def defs(tmp_path):
    d = tmp_path / "defs"
    for name in ("trips", "zones", "clicks"):
        define(d, name)
    return d


def body_of(ids, tag="t"):
    return b"".join(b'{"id": %d, "tag": "%s"}\n' % (i, tag.encode()) for i in ids)


def events(s, name=None, body=b"", query=None, headers=None, conn=None, method="POST"):
    """One request to /v0/events: (status, headers, body)."""
    q = query if query is not None else (f"name={name}" if name else "")
    path = "/v0/events" + (f"?{q}" if q else "")
    if conn is None:
        return s.request(method, path, body, headers)
    conn.request(method, path, body=body, headers=headers or {},
                 encode_chunked=not isinstance(body, bytes))
    r = conn.getresponse()
    return r.status, dict(r.getheaders()), r.read()


def tinybird(valid, invalid):
    return b'{"successful_rows": %d, "quarantined_rows": %d}\n' % (valid, invalid)


def day_file(s, name, suffix=".csv"):
    return s.out_dir / f"{name}-{today(utc=True)}{suffix}"


def rows(s, name):
    """The dataset's day file as (id, tag) tuples, header row excluded if --header."""
    p = day_file(s, name)
    if not p.exists():
        return []
    return [(int(r[0]), r[1]) for r in csv.reader(io.StringIO(p.read_text()))]


def written(s):
    """The files in the output directory, less the dot-named probe a worker starting up
    (slowly, under ASan) may hold there for a moment."""
    return s.files("[!.]*")


def serve(start_server, defs, *args):
    return start_server("--workers", "2", "--utc", "--datasets", str(defs), *args)


def run_exit(args, tmp_path):
    return subprocess.run([str(BINARY), "--listen", f"127.0.0.1:{free_port()}", "--out-dir",
                           str(tmp_path / "out")] + args, capture_output=True, timeout=20)


def sighup(s, workers=2):
    """SIGHUP to the main process; returns once every worker has acted on it."""
    before = s.stderr().count("reopened its files (SIGHUP)")
    s.proc.send_signal(signal.SIGHUP)
    try:
        wait_for(lambda: s.stderr().count("reopened its files (SIGHUP)") >= before + workers,
                 timeout=60, what="the workers to reload")
    except AssertionError:  # say what the server said (a flake seen twice under load)
        raise AssertionError(f"the workers did not all reload; stderr: {s.stderr()}") from None


# --- Start-up -------------------------------------------------------------------------------

def test_bad_definition_exits_2_with_file_and_line(tmp_path, defs):
    (defs / "broken.datasource").write_text("SCHEMA >\n    `a` Int32,\n    `b` NoSuchType\n")
    r = run_exit(["--datasets", str(defs)], tmp_path)
    assert r.returncode == 2, r.stderr
    assert re.search(rb"broken\.datasource:3: ", r.stderr), r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("case", ["missing dir", "empty dir", "unknown default"])
def test_unusable_set_exits_2(tmp_path, defs, case):
    args = {"missing dir": ["--datasets", str(tmp_path / "nope")],
            "empty dir": ["--datasets", str(tmp_path)],
            "unknown default": ["--datasets", str(defs), "--default-dataset", "nope"]}[case]
    r = run_exit(args, tmp_path)
    assert r.returncode == 2, r.stderr
    assert b"--datasets" in r.stderr or b"--default-dataset nope" in r.stderr, r.stderr


@pytest.mark.parametrize("option", [["--name", "foo"], ["--columns", "a,b"]])
def test_name_or_columns_with_datasets_is_a_usage_error(tmp_path, defs, option):
    """Each dataset's files are named after it, its columns from its definition: --name and
    --columns would be ignored, so they are refused."""
    r = run_exit(["--datasets", str(defs)] + option, tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"ndingest: {option[0]} cannot be given with --datasets: ".encode()), r.stderr


def test_startup_line_names_no_file_it_never_writes(start_server, defs):
    s = serve(start_server, defs, "--workers", "1")
    lines = s.stderr().splitlines()
    assert lines[0].endswith(f"writing {s.out_dir}/NAME-YYYY-MM-DD.csv"), lines
    assert lines[1] == f"ndingest: listening on 127.0.0.1:{s.port}, 1 worker", lines
    assert "nyc_taxi" not in s.stderr()


def test_max_datasets_limit(tmp_path, defs, start_server):
    r = run_exit(["--datasets", str(defs), "--max-datasets", "2"], tmp_path)
    assert r.returncode == 2 and b"more than --max-datasets 2" in r.stderr, r.stderr
    s = serve(start_server, defs, "--max-datasets", "3")  # exactly the most
    assert events(s, "clicks", body_of([1]))[0] == 202


# --- Routing, responses, errors ---------------------------------------------------------------

def test_routing_under_concurrent_load(start_server, defs):
    """Every acknowledged row is in its dataset's file exactly once, and nowhere else."""
    s = serve(start_server, defs, "--header")
    names = ["trips", "zones", "clicks"]
    acked = {n: [] for n in names}
    lock = threading.Lock()
    errors = []

    def client(seed):
        rnd = random.Random(seed)
        conn = s.connection()
        try:
            for k in range(40):
                name = rnd.choice(names)
                base = (seed * 1000 + k) * 100
                ids = list(range(base, base + rnd.randint(1, 30)))
                body, headers = body_of(ids, name), {}
                mode = k % 3
                if mode == 1:
                    body, headers = gzip.compress(body), {"Content-Encoding": "gzip"}
                elif mode == 2:  # chunked, cut anywhere
                    cut = rnd.randint(0, len(body))
                    body, headers = iter([body[:cut], body[cut:]]), {"Transfer-Encoding": "chunked"}
                wait = rnd.choice(["true", "false", None])
                q = f"name={name}" + (f"&wait={wait}" if wait else "")
                status, _, out = events(s, query=q, body=body, headers=headers, conn=conn)
                want = 200 if wait == "true" else 202
                if status != want or out != tinybird(len(ids), 0):
                    errors.append((status, out))
                    return
                with lock:
                    acked[name] += ids
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    for n in names:
        text = day_file(s, n).read_text()
        assert text.startswith("id,tag\n"), text[:40]
        got = [r for r in csv.reader(io.StringIO(text))][1:]
        ids = sorted(int(r[0]) for r in got)
        assert ids == sorted(acked[n]), n  # exactly once each
        assert all(r[1] == n for r in got), n  # and in its own dataset
    assert sum(map(len, acked.values())) > 500


def test_tinybird_responses_and_wait(start_server, defs):
    s = serve(start_server, defs)
    st, h, out = events(s, query="name=trips&wait=true", body=body_of([1, 2]) + b"{oops\n\n")
    assert (st, out) == (200, tinybird(2, 1)) and h["Content-Type"] == "application/json"
    assert events(s, query="name=trips", body=body_of([3]))[:3:2] == (202, tinybird(1, 0))
    assert events(s, query="wait=false&name=trips", body=body_of([4]))[:3:2] == (202, tinybird(1, 0))
    assert events(s, query="name=tr%69ps&wait=true", body=body_of([5]))[:3:2] == (200, tinybird(1, 0))
    st, _, out = events(s, query="name=trips&wait=true", body=gzip.compress(body_of([6, 7])),
                        headers={"Content-Encoding": "gzip"})
    assert (st, out) == (200, tinybird(2, 0))
    assert events(s, "trips", b"")[:3:2] == (202, tinybird(0, 0))  # an empty body appends nothing
    assert sorted(i for i, _ in rows(s, "trips")) == [1, 2, 3, 4, 5, 6, 7]
    assert not day_file(s, "zones").exists()


@pytest.mark.parametrize("query,status,words", [
    ("name=nope", 404, "no dataset nope"),
    ("", 400, "missing the name parameter"),
    ("name=", 400, "missing the name parameter"),
    ("wait=true", 400, "missing the name parameter"),
    ("name=trips&wait=yes", 400, "wait parameter is true or false"),
    ("name=tr%zzips", 400, "malformed"),
    ("name=" + "x" * 300, 400, "longer than 256 bytes"),
    # issue #15: the message was cut at the NUL ("no dataset a")
    ("name=a%00x", 400, "the name parameter holds a control byte (byte 2)"),
    ("name=ab%0Ax", 400, "the name parameter holds a control byte (byte 3)"),
    ("name=a%7F", 400, "the name parameter holds a control byte (byte 2)"),
    ("name=a%22b", 404, 'no dataset a"b'),
])
def test_error_statuses_write_nothing(start_server, defs, query, status, words):
    s = serve(start_server, defs)
    st, h, out = events(s, query=query, body=body_of([1]))
    assert st == status, out
    assert h["Content-Type"] == "application/json"
    assert words in json.loads(out)["error"], out
    assert not written(s)


def test_long_query_414_body_limit_413_method_405(start_server, defs):
    s = serve(start_server, defs, "--max-path", "64", "--max-body", "100")
    st, _, out = events(s, query="name=trips&pad=" + "x" * 80, body=body_of([1]))
    assert st == 414 and "query is longer than --max-path 64" in json.loads(out)["error"]
    assert events(s, query="name=trips&pad=" + "x" * 40, body=body_of([1]))[0] == 202
    st, _, out = events(s, "trips", body_of(range(100, 120)))
    assert st == 413 and "--max-body" in json.loads(out)["error"]
    st, h, _ = events(s, "trips", method="GET")
    assert st == 405 and h["Allow"] == "POST"
    assert [i for i, _ in rows(s, "trips")] == [1]


def test_post_root_without_default_dataset_is_404(start_server, defs):
    s = serve(start_server, defs)
    st, _, out = s.post(body_of([1]))
    assert st == 404 and "no default dataset" in json.loads(out)["error"]
    assert not written(s)


def test_post_root_keeps_its_contract_on_the_default_dataset(start_server, defs):
    s = serve(start_server, defs, "--default-dataset", "zones")
    body = body_of([1, 2]) + b"not json\n"
    st, _, out = s.post(body)
    assert (st, out) == (200, ok_response(len(body), 2, 1))
    assert [i for i, _ in rows(s, "zones")] == [1, 2]
    assert not s.files("nyc_taxi*")


def test_without_datasets_v0_events_is_404_as_before(server):
    st, _, out = server.request("POST", "/v0/events?name=trips", body_of([1]))
    assert (st, out) == server.request("POST", "/no-such-path", body_of([1]))[:3:2]
    assert st == 404
    assert not written(server)


# --- Tokens -------------------------------------------------------------------------------------

def test_scoped_tokens(start_server, defs, tmp_path):
    tok = tmp_path / "tokens"
    tok.write_text("# tokens\nroot-tok\ntrips-tok trips\nboth-tok trips,zones\n")
    s = serve(start_server, defs, "--token-file", str(tok), "--default-dataset", "clicks")

    def post(name, token, ids):
        return events(s, query=f"name={name}&wait=true", body=body_of(ids),
                      headers={AUTH: f"Bearer {token}"} if token else {})

    assert post("trips", "trips-tok", [1])[0] == 200
    st, _, out = post("zones", "trips-tok", [2])
    assert st == 403 and "may not append to the dataset zones" in json.loads(out)["error"]
    assert post("nope", "trips-tok", [3])[0] == 403  # scope first: no hint of what exists
    assert post("nope", "root-tok", [3])[0] == 404
    assert post("zones", "both-tok", [4])[0] == 200
    assert post("clicks", "root-tok", [5])[0] == 200
    assert post("zones", None, [6])[0] == 401
    assert post("zones", "trips-tok-", [7])[0] == 401
    assert s.post(body_of([8]), {AUTH: "Bearer trips-tok"})[0] == 403  # POST / is clicks
    assert s.post(body_of([9]), {AUTH: "Bearer root-tok"})[0] == 200
    assert [i for i, _ in rows(s, "trips")] == [1]
    assert [i for i, _ in rows(s, "zones")] == [4]
    assert sorted(i for i, _ in rows(s, "clicks")) == [5, 9]
    _, _, text = s.request("GET", "/metrics", headers={AUTH: "Bearer trips-tok"})
    assert b'ndingest_requests_total{code="403"} 3\n' in text


def test_max_tokens(start_server, defs, tmp_path):
    """--max-tokens N: N tokens load, N + 1 stop the start (exit 1) and are refused on SIGHUP
    with the previous tokens kept; 64 by default."""
    tok = tmp_path / "tokens"
    tok.write_text("".join(f"tok{i} trips\n" for i in range(100)))
    for args, line in (([], 65), (["--max-tokens", "99"], 100)):
        r = run_exit(["--datasets", str(defs), "--token-file", str(tok)] + args, tmp_path)
        assert r.returncode == 1, r.stderr
        assert f"tokens:{line}: more than {line - 1} tokens (--max-tokens)".encode() in r.stderr, r.stderr
    s = serve(start_server, defs, "--token-file", str(tok), "--max-tokens", "100")
    for token in ("tok0", "tok99"):
        assert events(s, "trips", body_of([1]), headers={AUTH: f"Bearer {token}"})[0] == 202
    tok.write_text("".join(f"new{i}\n" for i in range(101)))
    sighup(s)
    assert "tokens:101: more than 100 tokens (--max-tokens); keeping the previous token" in s.stderr()
    assert events(s, "trips", body_of([1]), headers={AUTH: "Bearer tok99"})[0] == 202
    assert events(s, "trips", body_of([1]), headers={AUTH: "Bearer new0"})[0] == 401


@pytest.mark.parametrize("scoped", [False, True])
def test_token_file_with_a_bom_fails_at_start(defs, tmp_path, start_server, scoped):
    """Issue #15: a token file saved by a Windows editor starts with EF BB BF, which no
    client sends: the start is refused with one line saying so (exit 1), in both formats,
    and a SIGHUP to such a file keeps the previous tokens."""
    tok = tmp_path / "tokens"
    tok.write_bytes(b"\xef\xbb\xbfs3cret trips\n" if scoped else b"\xef\xbb\xbfs3cret\n")
    args = ["--datasets", str(defs)] if scoped else []
    r = run_exit(args + ["--token-file", str(tok)], tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    where = f"{tok}:1:" if scoped else f"{tok}:"
    assert len(lines) == 1 and where in lines[0] and "UTF-8 byte order mark" in lines[0], lines
    tok.write_bytes(b"s3cret trips\n" if scoped else b"s3cret\n")
    s = (serve(start_server, defs, "--token-file", str(tok)) if scoped else
         start_server("--workers", "2", "--token-file", str(tok)))
    auth = {AUTH: "Bearer s3cret"}
    post = (lambda: events(s, "trips", body_of([1]), headers=auth)[0]) if scoped else \
        (lambda: s.post(b'{"vendorid": 1}\n', auth)[0])
    assert post() in (200, 202)
    tok.write_bytes(b"\xef\xbb\xbfs3cret\n")
    sighup(s)
    assert "UTF-8 byte order mark" in s.stderr() and "keeping the previous token" in s.stderr()
    assert post() in (200, 202)


def test_datasource_token_lines_grant_nothing(start_server, defs, tmp_path):
    """TOKEN lines in a definition are accepted and documented as inert (datasets.md, 6)."""
    define(defs, "trips", EVENTS + "TOKEN trips-tok APPEND\nTOKEN \"other\" READ\n")
    tok = tmp_path / "tokens"
    tok.write_text("zones-tok zones\n")
    s = serve(start_server, defs, "--token-file", str(tok))
    assert events(s, "trips", body_of([1]), headers={AUTH: "Bearer trips-tok"})[0] == 401
    assert events(s, "trips", body_of([1]), headers={AUTH: "Bearer zones-tok"})[0] == 403


# --- Metrics --------------------------------------------------------------------------------------

def test_metrics_per_dataset(start_server, defs):
    s = serve(start_server, defs)
    for _ in range(3):
        events(s, "trips", body_of([1, 2]) + b"[1]\n")
    events(s, "zones", body_of([3]))
    _, _, text = s.request("GET", "/metrics")
    t = text.decode()
    for line in ('ndingest_dataset_requests_total{dataset="trips"} 3',
                 'ndingest_dataset_rows_total{dataset="trips",verdict="valid"} 6',
                 'ndingest_dataset_rows_total{dataset="trips",verdict="invalid"} 3',
                 'ndingest_dataset_rows_total{dataset="zones",verdict="valid"} 1',
                 'ndingest_dataset_rows_total{dataset="clicks",verdict="valid"} 0',
                 'ndingest_requests_total{code="202"} 4',
                 'ndingest_rows_total{verdict="valid"} 7'):
        assert line + "\n" in t, line
    assert re.search(r'ndingest_dataset_body_bytes_total\{dataset="zones"\} 22\n', t), t


def test_metrics_count_quarantine_reasons(start_server, defs):
    s = serve(start_server, defs)
    events(s, "trips", b'{"id": "x", "tag": "a"}\n{oops\n{"id": 1.5, "tag": "b"}\n')
    t = s.request("GET", "/metrics")[2].decode()
    assert 'ndingest_dataset_quarantined_total{dataset="trips",reason="json"} 1\n' in t
    assert 'ndingest_dataset_quarantined_total{dataset="trips",reason="kind"} 1\n' in t
    assert 'ndingest_dataset_quarantined_total{dataset="trips",reason="syntax"} 1\n' in t


# --- SIGHUP ------------------------------------------------------------------------------------

def test_sighup_reload_under_load(start_server, defs):
    """A bad new set is logged and the old one stays; a new dataset appears, a removed one
    goes; no acknowledged row is lost or doubled while the set changes under load."""
    s = serve(start_server, defs)
    acked = {"trips": [], "zones": []}
    stop = threading.Event()
    errors = []

    def client(name, seed):
        conn = s.connection()
        k = 0
        try:
            while not stop.is_set():
                ids = [seed * 1000000 + k * 10 + j for j in range(5)]
                k += 1
                st, _, out = events(s, query=f"name={name}&wait=true", body=body_of(ids), conn=conn)
                if st == 200 and out == tinybird(5, 0):
                    acked[name] += ids
                elif st != 404:  # zones is removed below
                    errors.append((name, st, out))
                    return
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n, i)) for i, n in enumerate(["trips", "zones"] * 2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(acked["trips"]) > 50, what="load")
        (defs / "late.datasource").write_text("SCHEMA >\n    `id` Int64,\n    `x` Nope\n")
        sighup(s)
        assert "late.datasource:3: " in s.stderr() and "keeping the previous datasets" in s.stderr()
        assert events(s, "late", body_of([1]))[0] == 404
        n = len(acked["trips"])
        wait_for(lambda: len(acked["trips"]) > n + 50, what="load on the old set")
        define(defs, "late")
        (defs / "zones.datasource").unlink()
        sighup(s)
        for _ in range(6):  # fresh connections reach both workers
            assert events(s, query="name=late&wait=true", body=body_of([7]))[0] == 200
        wait_for(lambda: events(s, "zones", b"")[0] == 404, what="zones to go")
        n = len(acked["trips"])
        wait_for(lambda: len(acked["trips"]) > n + 50, what="load on the new set")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    for name in ("trips", "zones"):
        assert sorted(i for i, _ in rows(s, name)) == sorted(acked[name]), name
    assert [i for i, _ in rows(s, "late")] == [7] * 6


def test_sighup_reopens_files_when_the_new_set_is_refused(start_server, defs):
    """logrotate renames the day file and sends SIGHUP: with a bad definition in DIR the old
    set stays, and its files are still opened anew, by every worker."""
    s = serve(start_server, defs)
    for k in range(8):  # fresh connections reach both workers, which open the file
        assert events(s, query="name=trips&wait=true", body=body_of([k]))[0] == 200
    rotated = day_file(s, "trips").with_name(day_file(s, "trips").name + ".1")
    day_file(s, "trips").rename(rotated)
    (defs / "late.datasource").write_text("SCHEMA >\n    `x` Nope\n")
    sighup(s)
    assert "keeping the previous datasets" in s.stderr()
    for k in range(8):
        assert events(s, query="name=trips&wait=true", body=body_of([100 + k]))[0] == 200
    assert sorted(i for i, _ in rows(s, "trips")) == list(range(100, 108))
    assert len(rotated.read_text().splitlines()) == 8


def test_sighup_changing_a_datasets_columns_keeps_the_old_set(start_server, defs):
    """The day file's name depends on the dataset's name alone: a reload giving trips other
    columns would append rows of a second shape to it. The whole new set is refused (a new
    dataset in it too), by the main process and every worker, and the old set serves on;
    putting the old definition back, the set reloads."""
    s = serve(start_server, defs)
    for k in range(4):
        assert events(s, query="name=trips&wait=true", body=body_of([k]))[0] == 200
    old = (defs / "trips.datasource").read_text()
    define(defs, "trips", EVENTS.replace("SCHEMA >\n", "SCHEMA >\n    `s` String `json:$.s`,\n"))
    define(defs, "late")
    sighup(s)
    said = (f"{defs}/trips.datasource: the columns of dataset trips changed; its day's file "
            "holds rows of the old shape: give the new schema a new dataset name, or move the "
            "day's files and restart; keeping the previous datasets")
    assert s.stderr().count(said) == 3, s.stderr()  # the main process and both workers
    for k in range(4, 12):
        st, _, out = events(s, query="name=trips&wait=true", body=b'{"s": "b", "id": %d, "tag": "t"}\n' % k)
        assert (st, out) == (200, tinybird(1, 0))
        assert events(s, "late", body_of([1]))[0] == 404
    assert day_file(s, "trips").read_text() == "".join(f'{k},"t"\n' for k in range(12))
    (defs / "trips.datasource").write_text(old)
    sighup(s)
    for _ in range(6):  # fresh connections reach both workers
        assert events(s, query="name=late&wait=true", body=body_of([7]))[0] == 200


# --- Quarantine ------------------------------------------------------------------------------

def test_quarantine_rows_with_reasons_and_invalid_utf8_byte_exact(start_server, defs):
    s = serve(start_server, defs)
    bad = [b'{"id": "x", "tag": "a"}', b'{"id": 1, "tag": "\xff\xfe,\\"q"}', b'{"id": 2, oops \xc3']
    body = b'{"id": 1, "tag": "ok"}\n' + b"\n".join(bad) + b"\n"
    st, _, out = events(s, query="name=trips&wait=true", body=body)
    assert (st, out) == (200, tinybird(1, 3))
    q = day_file(s, "trips", ".quarantine.csv").read_bytes()
    got = list(csv.reader(io.StringIO(q.decode("latin-1"), newline="")))
    assert [r[3].encode("latin-1") for r in got] == bad  # invalid UTF-8 included, byte for byte
    assert got[0][1] == "['id']" and got[0][2].startswith("['")
    assert got[1][1] == got[2][1] == "[]"  # not JSON: no column, one reason
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", got[0][0])


def test_readme_example_trips(start_server, taxi_body):
    """README's example, with the issue's trips definition as shipped in data/datasets/: the
    taxi records (no pickup zone, tags or note in them) all become rows, each written as
    computed here from its record: DEFAULT 'unknown', the empty array, NULL."""
    defs = ROOT / "data" / "datasets"
    s = start_server("--workers", "2", "--utc", "--datasets", str(defs), "--default-dataset", "trips")
    status, _, out = events(s, "trips", taxi_body, query="name=trips&wait=true")
    assert (status, out) == (200, tinybird(1600, 0)), out
    want = []
    for line in taxi_body.splitlines():
        r = json.loads(line, parse_float=str)
        want.append(f'{r["vendorid"]},{r["tpep_pickup_datetime"]},{r["trip_distance"]},'
                    f'{r["total_amount"]},"unknown","[]",\\N\n')
    assert day_file(s, "trips").read_text() == "".join(want)
    assert not day_file(s, "trips", ".quarantine.csv").exists()
    p = subprocess.run([str(BINARY), "schema", "trips", "--datasets", str(defs), "--clickhouse"],
                       capture_output=True, timeout=30)
    assert p.returncode == 0 and b"CREATE TABLE `trips`" in p.stdout, p


def test_no_quarantine_counts_refused_lines_and_keeps_no_file(start_server, defs):
    """--no-quarantine with datasets: refused lines are counted in the response and the
    metrics, and no quarantine file is made; the good rows are written as ever."""
    s = serve(start_server, defs, "--no-quarantine")
    body = body_of([1, 2]) + b'{"id": "x", "tag": "t"}\n{"id": 3,}\n' + body_of([4])
    st, _, out = events(s, query="name=trips&wait=true", body=body)
    assert (st, out) == (200, tinybird(3, 2)), out
    assert [r[0] for r in rows(s, "trips")] == [1, 2, 4]
    assert not list(s.out_dir.glob("*.quarantine.csv")), list(s.out_dir.iterdir())
    _, _, metrics = s.request("GET", "/metrics")
    text = metrics.decode()
    assert 'ndingest_dataset_quarantined_total{dataset="trips",reason="kind"} 1' in text, text
    assert 'ndingest_dataset_quarantined_total{dataset="trips",reason="json"} 1' in text, text


# --- Quarantine bounds (issue #15) -------------------------------------------------------------

def metric(s, line_start):
    """The value of the /metrics line starting with line_start (its labels included)."""
    for line in s.request("GET", "/metrics")[2].decode().splitlines():
        if line.startswith(line_start + " "):
            return int(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {line_start} in /metrics")


def quarantined(s, name):
    """The dataset's quarantine rows as parsed, each checked to be whole."""
    p = day_file(s, name, ".quarantine.csv")
    if not p.exists():
        return b"", []
    q = p.read_bytes()
    got = list(csv.reader(io.StringIO(q.decode("latin-1"), newline="")))
    assert all(len(r) == 4 for r in got) and (not q or q.endswith(b"\n"))
    return q, got


def test_quarantine_bound_per_body(start_server, defs):
    """The red team's body: lines of `1` (each a 53-byte quarantine row, 26.5 times its 2
    bytes), gzipped, with good rows among them. Under --max-quarantine each body keeps its
    first refused lines up to the bound, whole; the others are counted in the response and as
    reason "full" in /metrics, and every good row is written. One log line per body."""
    s = serve(start_server, defs, "--max-quarantine", "64K")
    nbad, ids = 200_000, list(range(200))
    body = b"".join(b'1\n' * 1000 + body_of([i]) for i in ids)
    wire = gzip.compress(body)
    st, _, out = events(s, query="name=trips&wait=true", body=wire, headers={"Content-Encoding": "gzip"})
    assert (st, out) == (200, tinybird(len(ids), nbad)), out
    assert [i for i, _ in rows(s, "trips")] == ids
    q, got = quarantined(s, "trips")
    row = len(q) // len(got)
    assert row == 53 and len(q) == row * len(got), q[:200]
    assert len(q) <= 64 * 1024 < len(q) + row  # as many as fit, none cut
    assert all(r[3] == "1" and r[2] == "['not a JSON object']" for r in got)
    kept = len(got)
    assert metric(s, 'ndingest_dataset_quarantined_total{dataset="trips",reason="json"}') == kept
    assert metric(s, 'ndingest_dataset_quarantined_total{dataset="trips",reason="full"}') == nbad - kept
    assert metric(s, 'ndingest_dataset_rows_total{dataset="trips",verdict="invalid"}') == nbad
    assert metric(s, "ndingest_quarantine_full_total") == nbad - kept
    said = "a body's refused lines passed --max-quarantine 65536 bytes of "
    assert s.stderr().count(said) == 1, s.stderr()
    # The bound is per body: the next one keeps as much again.
    st, _, out = events(s, query="name=trips&wait=true", body=wire, headers={"Content-Encoding": "gzip"})
    assert (st, out) == (200, tinybird(len(ids), nbad)), out
    assert len(quarantined(s, "trips")[1]) == 2 * kept
    assert s.stderr().count(said) == 2
    assert metric(s, "ndingest_quarantine_full_total") == 2 * (nbad - kept)


def test_quarantine_bound_per_day(start_server, defs):
    """--max-quarantine-day: the day's quarantine file is judged by its size when a body's
    first refused line comes; bodies keep rows until it is reached (the file never passes it
    here, the bodies coming one after another), then none; each worker logs it once.
    Another dataset's file has its own bound."""
    s = serve(start_server, defs, "--max-quarantine-day", "16K")
    bad = b"".join(b'{"id": "%d", "tag": "t"}\n' % i for i in range(100))  # kind: a string
    counts = []
    for k in range(4):
        st, _, out = events(s, query="name=trips&wait=true", body=body_of([k]) + bad)
        assert (st, out) == (200, tinybird(1, 100)), out
        counts.append(len(quarantined(s, "trips")[1]))
    q, got = quarantined(s, "trips")
    assert 100 == counts[0] < counts[1] < 200 and counts[1] == counts[2] == counts[3] == len(got)
    row = len(q) - len(q.rsplit(b"\n", 2)[0]) - 1  # the last row's size: the longest ids
    assert len(q) <= 16384 < len(q) + row
    assert [i for i, _ in rows(s, "trips")] == [0, 1, 2, 3]
    assert metric(s, 'ndingest_dataset_quarantined_total{dataset="trips",reason="kind"}') == len(got)
    assert metric(s, 'ndingest_dataset_quarantined_total{dataset="trips",reason="full"}') == 400 - len(got)
    # once a day by each worker that met it (two here)
    assert 1 <= s.stderr().count("reached --max-quarantine-day 16384 bytes") <= 2, s.stderr()
    st, _, out = events(s, query="name=zones&wait=true", body=bad)
    assert (st, out) == (200, tinybird(0, 100))
    assert len(quarantined(s, "zones")[1]) == 100


def test_quarantine_bounds_on_post_root(start_server):
    """POST / (untyped) keeps invalid lines raw in .invalid.ndjson, which amplifies as much
    through gzip: the same bounds apply, its response and ndingest_rows_total count every
    line, ndingest_quarantine_full_total those not kept."""
    s = start_server("--workers", "1", "--max-quarantine", "100", "--max-quarantine-day", "150")
    good = b'{"vendorid": 1}\n'
    body = good + b"not json\n" * 50 + good
    invalid = s.out_dir / f"nyc_taxi-{today()}.invalid.ndjson"
    st, _, out = s.post(body)
    assert (st, out) == (200, ok_response(len(body), 2, 50))
    assert invalid.read_bytes() == b"not json\n" * 11  # 99 bytes: a twelfth would pass 100
    st, _, out = s.post(body)
    assert (st, out) == (200, ok_response(len(body), 2, 50))
    assert invalid.read_bytes() == b"not json\n" * 16  # the day's 150 bytes: 5 more fit
    assert s.post(body)[0] == 200
    assert invalid.read_bytes() == b"not json\n" * 16
    assert len(s.csv_bytes().splitlines()) == 6
    assert metric(s, "ndingest_quarantine_full_total") == 150 - 16
    assert metric(s, 'ndingest_rows_total{verdict="invalid"}') == 150
    assert s.stderr().count("--max-quarantine 100 bytes") == 1, s.stderr()
    assert s.stderr().count("reached --max-quarantine-day 150 bytes") == 1, s.stderr()


def test_quarantine_bound_defaults_keep_a_real_body(start_server, defs):
    """The defaults (256 MiB a body, 64 GiB a day) are met by no real client: a body of
    refused lines of the usual sizes is kept whole, and nothing is counted as full."""
    s = serve(start_server, defs)
    bad = b"".join(b'{"id": %d.5, "tag": "%s"}\n' % (i, b"x" * 300) for i in range(5000))
    st, _, out = events(s, query="name=trips&wait=true", body=bad)
    assert (st, out) == (200, tinybird(0, 5000))
    assert len(quarantined(s, "trips")[1]) == 5000
    assert metric(s, "ndingest_quarantine_full_total") == 0
    h = subprocess.run([str(BINARY), "--help"], capture_output=True, timeout=20).stdout.decode()
    assert re.search(r"--max-quarantine SIZE .*\(default 256M", h.replace("\n", " ")), h
    assert re.search(r"--max-quarantine-day SIZE .*\(default 64G", h.replace("\n", " ")), h


def test_replaced_worker_keeps_the_tokens_in_force(defs, tmp_path, start_server):
    """A worker forked after the token file went bad (here: a worker killed and replaced)
    starts with the tokens in force, as the others keep them, rather than failing on the
    file and being restarted over and over (it also crashed on that failed start)."""
    tok = tmp_path / "tokens"
    tok.write_bytes(b"s3cret trips\n")
    s = serve(start_server, defs, "--token-file", str(tok))
    tok.write_bytes(b"\xef\xbb\xbfs3cret trips\n")
    victim = worker_pids(s.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in worker_pids(s.proc.pid) and len(worker_pids(s.proc.pid)) == 2,
             what="the worker to be replaced")
    time.sleep(1.5)  # a replacement that cannot start dies within this, and is replaced again
    auth = {AUTH: "Bearer s3cret"}
    for _ in range(8):  # new connections: both workers answer some
        assert events(s, "trips", body_of([1]), headers=auth)[0] == 202
    err = s.stderr()
    assert "Segmentation fault" not in err and err.count("restarting worker") == 1, err
