"""test_format.py -- what ndingest writes for what it is sent: rows, quoting, options, files.

Every expected value is computed from the input by contract.py (an independent Python
model of doc/format.md) or by Python's csv module, never taken from the server's answers.
"""
import csv
import datetime
import io
import json
import time

import pytest

from conftest import SHARED_SAMPLE, ok_response, out_listing, today
import contract

TAXI_KEYS = ["vendorid", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count",
             "trip_distance", "ratecodeid", "store_and_fwd_flag", "pulocationid",
             "dolocationid", "payment_type", "fare_amount", "extra", "mta_tax", "tip_amount",
             "tolls_amount", "improvement_surcharge", "total_amount"]


def day_file(s, suffix=".csv", name="nyc_taxi", utc=False):
    return s.out_dir / f"{name}-{today(utc)}{suffix}"


def post_ok(s, body, valid, invalid, headers=None):
    status, _, resp = s.post(body, headers)
    assert status == 200, resp
    assert resp == ok_response(len(body), valid, invalid)


def check(s, body, columns=contract.DEFAULT_COLUMNS, crlf=False, max_line=1 << 20):
    """Posts body and checks the response counts against the model; returns the model's
    (csv, quarantined) for the caller to compare with the files."""
    rows, bad, valid, invalid = contract.expected(body, columns, crlf, max_line)
    post_ok(s, body, valid, invalid)
    return rows, bad


def read(path):
    return path.read_bytes() if path.exists() else b""


def python_csv(rows, columns, header=False):
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, columns, extrasaction="ignore")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow(r)
    return f.getvalue().encode()


# -- the classic body ------------------------------------------------------------------

def test_taxi_body_gives_expected_csv(server, taxi_body):
    rows, bad = check(server, taxi_body)
    assert bad == b""
    assert rows.count(b"\n") == taxi_body.count(b"\n") == 1600
    assert server.files() == [day_file(server)]
    assert day_file(server).read_bytes() == rows
    assert not day_file(server, ".invalid.ndjson").exists()


def test_taxi_body_all_columns(start_server, taxi_body):
    s = start_server("--workers", "1", "--columns", ",".join(TAXI_KEYS))
    rows, _ = check(s, taxi_body, TAXI_KEYS)
    assert day_file(s).read_bytes() == rows
    # Generated money values have at most 2 decimals and no trailing zeros, so Python's
    # float repr prints them as sent: the csv module agrees.
    assert rows == python_csv([json.loads(l) for l in taxi_body.splitlines()], TAXI_KEYS).replace(b"\r\n", b"\n")


def test_two_bodies_append_in_order(server, taxi_body):
    cut = taxi_body.index(b"\n", 100_000) + 1
    r1, _ = check(server, taxi_body[:cut])
    r2, _ = check(server, taxi_body[cut:])
    assert day_file(server).read_bytes() == r1 + r2
    assert r1 + r2 == contract.expected(taxi_body)[0]


# -- compatibility with Python's csv module on the real records --------------------------

@pytest.mark.parametrize("columns", [contract.DEFAULT_COLUMNS, TAXI_KEYS,
                                     ["store_and_fwd_flag", "missing_key", "vendorid"]])
def test_crlf_matches_python_csv_on_real_sample(start_server, columns):
    if not SHARED_SAMPLE.exists():
        pytest.skip(f"{SHARED_SAMPLE} is absent (no ../shared): nothing to compare against")
    lines = SHARED_SAMPLE.read_bytes().splitlines(keepends=True)
    s = start_server("--workers", "2", "--crlf", "--columns", ",".join(columns))
    post_ok(s, b"".join(lines), len(lines), 0)
    got = day_file(s).read_bytes().split(b"\r\n")
    assert got[-1] == b""
    got = [g + b"\r\n" for g in got[:-1]]
    assert len(got) == len(lines)
    for i, line in enumerate(lines):
        want = python_csv([json.loads(line)], columns)
        assert got[i] == want, f"line {i + 1}: {line!r}"


# -- --header ----------------------------------------------------------------------------

def test_header_once_per_file(start_server, taxi_body):
    s = start_server("--workers", "2", "--header")
    r1, _ = check(s, taxi_body[:3660])
    r2, _ = check(s, taxi_body)
    header = contract.header_row(contract.DEFAULT_COLUMNS)
    assert header == b"vendorid,tpep_pickup_datetime,trip_distance,total_amount\n"
    assert day_file(s).read_bytes() == header + r1 + r2


def test_header_crlf_custom_columns(start_server):
    s = start_server("--workers", "1", "--header", "--crlf", "--columns", 'a,q"uote')
    r, _ = check(s, b'{"a":1,"q\\"uote":"x"}\n', ["a", 'q"uote'], crlf=True)
    assert r == b"1,x\r\n"
    assert contract.header_row(["a", 'q"uote'], crlf=True) == b'a,"q""uote"\r\n'
    assert day_file(s).read_bytes() == b'a,"q""uote"\r\n' + r


def test_header_with_no_rows_yet(start_server):
    """Only invalid lines: whether the header is written is the server's choice, but if the
    file exists it starts with the header, and a later row follows it exactly once."""
    s = start_server("--workers", "1", "--header")
    post_ok(s, b"nope\n", 0, 1)
    r, _ = check(s, b'{"vendorid":7}\n')
    assert day_file(s).read_bytes() == contract.header_row(contract.DEFAULT_COLUMNS) + r


# -- cells -------------------------------------------------------------------------------

CELL_BODY = (
    b'{"id":1,"s":"plain","n":-0.5e+10,"t":true,"f":false,"z":null,"o":{"k":[1, 2 ,{"x":"y"}]},"a":[ ]}\n'
    b'{"id":2,"s":"caf\\u00e9 \\u65e5\\u672c \\ud83d\\ude00 \\"q\\" a\\\\b \\/ \\t","n":12345678901234567890123}\n'
    b'{"id":3,"s":"comma, here","o":"line\\nbreak","a":"cr\\rhere","n":1E2}\n'
    b'{"id":4,"s":"\xc3\xa9t\xc3\xa9 raw utf-8","o":{},"a":[[[]]],"n":0}\n'
    b'{"id":5}\n'
    b'{"id":6,"s":"","o":null,"a":false,"n":"7"}\n'
    b'{"id":7,"s":"first","s":"last wins","id":77}\n'
    b'{"i\\u0064":8,"\\u0073":"escaped keys match"}\n'
    b'  {"id" : 9 , "s" : "spaces around" }  \t\n'
    b'{"id":10,"s":"\\"starts with a quote","o":"ends with a quote\\"","a":"\\"\\""}\n'
    b'{"id":11,"other":{"s":"nested s is not the column"},"s":"top"}\n'
)
CELL_COLUMNS = ["id", "s", "n", "t", "f", "z", "o", "a"]


def test_cells_custom_columns(start_server):
    s = start_server("--workers", "1", "--columns", ",".join(CELL_COLUMNS))
    rows, bad = check(s, CELL_BODY, CELL_COLUMNS)
    assert bad == b""
    got = day_file(s).read_bytes()
    assert got == rows
    # Spot checks of the model itself, so that a wrong model cannot hide a wrong server.
    lines = got.decode().splitlines(keepends=True)
    assert lines[0] == '1,plain,-0.5e+10,true,false,,"{""k"":[1, 2 ,{""x"":""y""}]}",[ ]\n'
    assert '"café 日本 😀 ""q"" a\\b / \t"' in lines[1]
    assert lines[1].endswith(",12345678901234567890123,,,,,\n")
    parsed = list(csv.reader(io.StringIO(got.decode(), newline="")))
    assert parsed[2] == ["3", "comma, here", "1E2", "", "", "", "line\nbreak", "cr\rhere"]
    assert parsed[4] == ["5", "", "", "", "", "", "", ""]
    assert parsed[6][:2] == ["77", "last wins"]
    assert parsed[7][:2] == ["8", "escaped keys match"]
    assert parsed[9][1] == '"starts with a quote'
    assert parsed[10][1] == "top"


def test_single_column_empty_cell_is_not_a_blank_line(start_server):
    s = start_server("--workers", "1", "--columns", "missing")
    rows, _ = check(s, b'{"a":1}\n{"missing":null}\n{"missing":""}\n{"missing":"x"}\n', ["missing"])
    assert rows == b'""\n""\n""\nx\n'
    assert day_file(s).read_bytes() == rows


# -- the line contract -------------------------------------------------------------------

VALID_LINES = [
    b'{}', b'{"vendorid":1}', b' {"vendorid":1} ', b'\t{"vendorid":1}\t', b'{"vendorid":1}\r',
    b'{"a":[],"b":{},"c":"","d":0,"e":-0,"f":0.0,"g":1e5,"h":1E-5,"i":-1.5e+300}',
    b'{"vendorid":1e400}', b'{"a":"\\u0000x"}', b'{"a":"\\uD83D\\uDE00"}',
    b'{"a":' + b'[' * 100 + b']' * 100 + b'}',
    b'{"a":"\xf0\x9f\x98\x80 \xe2\x82\xac \xc2\xa2"}', b'{"a":"\x7f"}',
]
INVALID_LINES = [
    b'[]', b'1', b'"s"', b'null', b'true', b'{} {}', b'{}{}', b'{} x', b'{"a":1,}', b'{,}',
    b'{"a" 1}', b'{"a":}', b'{a:1}', b"{'a':1}", b'{"a":NaN}', b'{"a":Infinity}',
    b'{"a":-Infinity}', b'{"a":01}', b'{"a":1.}', b'{"a":.5}', b'{"a":+1}', b'{"a":-}',
    b'{"a":1e}', b'{"a":0x10}', b'{"a":tru}', b'{"a":True}', b'{"a":nul}', b'{"a":"x}',
    b'{"a":"\\x"}', b'{"a":"\\u12"}', b'{"a":"\\u12G4"}', b'{"a":"tab\there"}',
    b'{"a":"nl\x01"}', b'{"a":"\xff"}', b'{"a":"\xc3"}', b'{"a":"\xc0\xaf"}',
    b'{"a":"\xed\xa0\x80"}', b'{"a":"\xf4\x90\x80\x80"}', b'{"a":[1,]}', b'{"a":[1 2]}',
    b'{"a":{"b"}}', b'{"a":1', b'{"a":[}', b'{"a":1}}', b'{"a":1}]', b'\x00{}', b'{}\x00',
    b'{"a":1}\x0b', b'\xef\xbb\xbf{"a":1}x', b'{"a":' + b'[' * 5000 + b']' * 5000 + b'}',
    b'{"a":1} \x0c',
]


@pytest.mark.parametrize("line", VALID_LINES, ids=lambda l: repr(l[:40]))
def test_model_accepts(line):
    assert contract.parse_object(line) is not None


@pytest.mark.parametrize("line", INVALID_LINES, ids=lambda l: repr(l[:40]))
def test_model_rejects(line):
    assert contract.parse_object(line) is None


def test_line_verdicts(start_server):
    s = start_server("--workers", "1", "--columns", "vendorid,a")
    body = b"".join(l + b"\n" for pair in zip(VALID_LINES, INVALID_LINES) for l in pair)
    body += b"".join(l + b"\n" for l in INVALID_LINES[len(VALID_LINES):])
    rows, bad = check(s, body, ["vendorid", "a"])
    assert day_file(s).read_bytes() == rows
    assert day_file(s, ".invalid.ndjson").read_bytes() == bad
    assert bad.count(b"\n") >= len(INVALID_LINES)


def test_depth_limit(start_server):
    """Nesting deeper than 1024 levels is invalid; the top-level object is level 1."""
    s = start_server("--workers", "1", "--columns", "id")
    ok = b'{"id":1,"a":' + b"[" * 1023 + b"]" * 1023 + b"}"
    deep = b'{"id":2,"a":' + b"[" * 1024 + b"]" * 1024 + b"}"
    mixed = b'{"id":3,"a":' + b'[{"b":' * 511 + b"[]" + b"}]" * 511 + b"}"  # 1 + 1022 + 1 levels
    post_ok(s, ok + b"\n" + deep + b"\n" + mixed + b"\n", 2, 1)
    assert day_file(s).read_bytes() == b"1\n3\n"
    assert day_file(s, ".invalid.ndjson").read_bytes() == deep + b"\n"


def test_each_invalid_line_alone(start_server):
    """One body per invalid line, so that one verdict cannot hide behind another."""
    s = start_server("--workers", "2")
    for line in INVALID_LINES:
        status, _, resp = s.post(line + b"\n")
        assert status == 200, (line, resp)
        assert resp == ok_response(len(line) + 1, 0, 1), line
    assert read(day_file(s)) == b""
    assert day_file(s, ".invalid.ndjson").read_bytes() == b"".join(l + b"\n" for l in INVALID_LINES)


def test_quarantine_keeps_invalid_lines_raw(server, taxi_body):
    good = taxi_body.splitlines(keepends=True)[:10]
    body = (good[0] + b'{"vendorid":1,\n' + good[1] + b"not json at all \xff\r\n" + b"[1,2]\n"
            + b"".join(good[2:]) + b'{"unterminated":"x')
    rows, bad = check(server, body)
    assert bad == b'{"vendorid":1,\nnot json at all \xff\r\n[1,2]\n{"unterminated":"x\n'
    assert day_file(server).read_bytes() == rows
    assert day_file(server, ".invalid.ndjson").read_bytes() == bad


def test_no_quarantine(start_server, taxi_body):
    s = start_server("--workers", "2", "--no-quarantine")
    body = taxi_body[:3660] + b"broken\n{]\n"
    rows, _ = check(s, body)
    assert day_file(s).read_bytes() == rows
    assert s.files("*.invalid.ndjson") == []
    assert out_listing(s.out_dir) == [day_file(s).name]


def test_over_max_line_is_invalid_not_quarantined(start_server):
    s = start_server("--workers", "1", "--max-line", "1K")
    long_valid = b'{"vendorid":1,"pad":"' + b"x" * 5000 + b'"}'
    long_invalid = b"y" * 3333
    exact = b'{"vendorid":2,"pad":"' + b"z" * (1024 - 23) + b'"}'
    assert len(exact) == 1024
    body = (b'{"vendorid":0}\n' + long_valid + b"\n" + exact + b"\n" + long_invalid + b"\n"
            + b"bad\n" + long_valid)
    rows, bad = check(s, body, max_line=1024)
    assert rows == b"0,,,\n2,,,\n"
    assert bad == b"bad\n"
    assert day_file(s).read_bytes() == rows
    assert day_file(s, ".invalid.ndjson").read_bytes() == bad
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and str(len(long_invalid)) not in s.stderr():
        time.sleep(0.05)
    err = s.stderr()
    assert str(len(long_valid)) in err, err
    assert str(len(long_invalid)) in err, err


def test_over_max_line_across_pieces(start_server):
    """An oversize line sent in many small chunks is skipped whole; the next line counts."""
    s = start_server("--workers", "1", "--max-line", "100")
    big = b'{"vendorid":"' + b"a" * 10000 + b'"}\n'
    body = [b'{"vendorid":1}\n', big[:50], big[50:150], big[150:], b'{"vendorid":3}']
    c = s.connection()
    try:
        c.putrequest("POST", "/")
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for piece in body:
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.02)
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        assert r.status == 200
        total = sum(len(p) for p in body)
        assert r.read() == ok_response(total, 2, 1)
    finally:
        c.close()
    assert day_file(s).read_bytes() == b"1,,,\n3,,,\n"
    assert s.files("*.invalid.ndjson") == []


def test_blank_lines_not_counted(server):
    body = b'\n\n{"vendorid":1}\n \n\t\r\n\r\n{"vendorid":2}\n\n   \n'
    rows, bad = check(server, body)
    assert (rows, bad) == (b"1,,,\n2,,,\n", b"")
    assert day_file(server).read_bytes() == rows
    post_ok(server, b"\n\n\n", 0, 0)
    post_ok(server, b"", 0, 0)
    assert day_file(server).read_bytes() == rows


def test_crlf_line_endings_in_body(server, taxi_body):
    lines = taxi_body.splitlines()[:50]
    body = b"\r\n".join(lines) + b"\r\n"
    rows, bad = check(server, body)
    assert bad == b""
    assert rows == contract.expected(b"\n".join(lines) + b"\n")[0]
    assert day_file(server).read_bytes() == rows


def test_final_line_without_newline(server, taxi_body):
    lines = taxi_body.splitlines()[:7]
    body = b"\n".join(lines)
    assert not body.endswith(b"\n")
    rows, _ = check(server, body)
    assert rows.count(b"\n") == 7
    assert day_file(server).read_bytes() == rows
    post_ok(server, b'{"vendorid":"last"}\r', 1, 0)
    assert day_file(server).read_bytes() == rows + b"last,,,\n"


def test_crlf_rows(start_server, taxi_body):
    s = start_server("--workers", "2", "--crlf")
    rows, _ = check(s, taxi_body, crlf=True)
    assert day_file(s).read_bytes() == rows
    assert rows.count(b"\r\n") == 1600


# -- files -------------------------------------------------------------------------------

def _tz_away_from_utc():
    """A POSIX TZ whose date differs from UTC's right now (UTC+14 or UTC-12)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    if now.hour >= 12:
        return "<+14>-14", (now + datetime.timedelta(hours=14)).strftime("%Y-%m-%d")
    return "<-12>+12", (now - datetime.timedelta(hours=12)).strftime("%Y-%m-%d")


@pytest.mark.parametrize("utc", [True, False])
def test_utc_names_file_by_utc_date(start_server, utc, tmp_path):
    import os
    tz, local_day = _tz_away_from_utc()
    utc_day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    assert local_day != utc_day
    env = dict(os.environ, TZ=tz)
    args = ["--workers", "1"] + (["--utc"] if utc else [])
    s = start_server(*args, env=env)
    post_ok(s, b'{"vendorid":1}\nbad\n', 1, 1)
    day = utc_day if utc else local_day
    assert [p.name for p in s.files()] == [f"nyc_taxi-{day}.csv"]
    assert [p.name for p in s.files("*.invalid.ndjson")] == [f"nyc_taxi-{day}.invalid.ndjson"]


def test_name(start_server):
    s = start_server("--workers", "1", "--name", "trips.v2")
    post_ok(s, b'{"vendorid":1}\n[]\n', 1, 1)
    assert out_listing(s.out_dir) == [
        f"trips.v2-{today()}.csv", f"trips.v2-{today()}.invalid.ndjson"]
    assert (s.out_dir / f"trips.v2-{today()}.csv").read_bytes() == b"1,,,\n"


def test_out_dir_created_if_missing(start_server, tmp_path):
    out = tmp_path / "fresh"
    assert not out.exists()
    s = start_server("--workers", "1", out_dir=out)
    post_ok(s, b'{"vendorid":1}\n', 1, 0)
    assert (out / f"nyc_taxi-{today()}.csv").read_bytes() == b"1,,,\n"


def test_out_dir_nested_created(tmp_path):
    """Every missing component is made (mkdir -p). Started by hand: the fixture keeps the
    server's stderr next to the out dir, so it needs the parent to exist."""
    import signal
    import subprocess
    from conftest import BINARY, Server, free_port
    out = tmp_path / "not" / "yet" / "there"
    port = free_port()
    p = subprocess.Popen([str(BINARY), "serve", "--listen", f"127.0.0.1:{port}", "--workers", "1",
                          "--out-dir", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        probe = Server.__new__(Server)  # only for its request helpers
        probe.host, probe.port, probe.proc = "127.0.0.1", port, p
        deadline = time.monotonic() + 20
        while True:
            assert p.poll() is None, p.stderr.read()
            try:
                if probe.request("GET", "/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "not ready"
                time.sleep(0.05)
        status, _, resp = probe.post(b'{"vendorid":1}\n')
        assert (status, resp) == (200, ok_response(15, 1, 0))
        assert (out / f"nyc_taxi-{today()}.csv").read_bytes() == b"1,,,\n"
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0


# -- transfer forms ----------------------------------------------------------------------

def test_chunked_in_odd_pieces(server, taxi_body):
    rows, _, valid, invalid = contract.expected(taxi_body)
    c = server.connection()
    try:
        c.putrequest("POST", "/")
        c.putheader("Transfer-Encoding", "chunked")
        c.putheader("Content-Type", "application/x-ndjson")
        c.endheaders()
        i, step = 0, 1
        while i < len(taxi_body):
            piece = taxi_body[i:i + step]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            i += len(piece)
            step = step * 3 % 9973 + 1
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        assert r.status == 200
        assert r.read() == ok_response(len(taxi_body), valid, invalid)
    finally:
        c.close()
    assert day_file(server).read_bytes() == rows


def test_gzip_body(server, taxi_body):
    import gzip
    body = gzip.compress(taxi_body)
    rows, _, valid, invalid = contract.expected(taxi_body)
    status, _, resp = server.post(body, {"Content-Encoding": "gzip"})
    assert status == 200, resp
    assert resp == ok_response(len(body), valid, invalid)
    assert day_file(server).read_bytes() == rows
