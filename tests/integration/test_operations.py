"""test_operations.py -- running ndingest: GET /metrics summed over the workers, the access
log, --quiet and timestamped errors, and the limits (header size and count, header and body
deadlines, connections per worker, inflation size and ratio)."""
import gzip
import os
import re
import select
import signal
import socket
import threading
import time
import zlib

import pytest

from conftest import ok_response, read_response, worker_pids, raw_connect, assert_closed

METRIC_LINE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


def scrape(server):
    """(values by 'name{labels}', X-Worker, the raw text) of one GET /metrics."""
    status, headers, body = server.request("GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4"
    text = body.decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) ndingest_[a-z_]+ ", line), line
            continue
        m = METRIC_LINE.match(line)
        assert m, line
        values[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return values, headers["X-Worker"], text


def requests_total(v):
    return sum(n for k, n in v.items() if k.startswith("ndingest_requests_total{"))


def check_histogram(v, text):
    les = re.findall(r'^ndingest_request_duration_seconds_bucket\{le="([^"]+)"\} ', text, re.M)
    assert les == ["0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"]
    counts = [v['ndingest_request_duration_seconds_bucket{le="%s"}' % le] for le in les]
    assert counts == sorted(counts), counts  # cumulative
    assert counts[-1] == v["ndingest_request_duration_seconds_count"]
    assert v["ndingest_request_duration_seconds_count"] == requests_total(v)
    assert v["ndingest_request_duration_seconds_sum"] > 0
    for name, kind in (("ndingest_requests_total", "counter"), ("ndingest_rows_total", "counter"),
                       ("ndingest_body_bytes_total", "counter"), ("ndingest_decoded_bytes_total", "counter"),
                       ("ndingest_written_bytes_total", "counter"),
                       ("ndingest_request_duration_seconds", "histogram"),
                       ("ndingest_open_connections", "gauge"), ("ndingest_worker_restarts_total", "counter")):
        assert f"# TYPE {name} {kind}\n" in text
        assert f"# HELP {name} " in text




def assert_error(resp, status):
    assert resp is not None, "connection closed without a response"
    got, headers, body = resp
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert body.startswith(b'{"error": "') and body.endswith(b'"}\n'), body
    return body


# --- /metrics ---------------------------------------------------------------------------

def test_metrics_totals_across_workers(start_server):
    s = start_server("--workers", "2")
    body = b'{"vendorid":1,"trip_distance":2.5}\nnot json\n{"vendorid":2}\n'
    written = len(b"1,,2.5,\n2,,,\n") + len(b"not json\n")
    n = 24
    v0, _, _ = scrape(s)
    workers = set()
    for _ in range(n):  # a new connection each: the workers share them
        status, headers, out = s.post(body)
        assert status == 200 and out == ok_response(len(body), 2, 1)
        workers.add(headers["X-Worker"])
    assert workers == {"0", "1"}
    seen = {}
    for k in range(1, 40):
        v, worker, text = scrape(s)
        # totals, whichever worker answers (the scrapes before this one count as 200s)
        assert v['ndingest_requests_total{code="200"}'] - v0['ndingest_requests_total{code="200"}'] == n + k
        assert v['ndingest_rows_total{verdict="valid"}'] - v0['ndingest_rows_total{verdict="valid"}'] == 2 * n
        assert v['ndingest_rows_total{verdict="invalid"}'] - v0['ndingest_rows_total{verdict="invalid"}'] == n
        assert v["ndingest_body_bytes_total"] - v0["ndingest_body_bytes_total"] == n * len(body)
        assert v["ndingest_decoded_bytes_total"] - v0["ndingest_decoded_bytes_total"] == n * len(body)
        assert v["ndingest_written_bytes_total"] - v0["ndingest_written_bytes_total"] == n * written
        assert v["ndingest_open_connections"] >= 1
        assert v["ndingest_worker_restarts_total"] == 0
        check_histogram(v, text)
        per_worker = [v.get('ndingest_worker_requests_total{worker="%d"}' % i) for i in range(2)]
        assert sum(per_worker) == requests_total(v) and min(per_worker) > 0, per_worker
        assert v['ndingest_worker_open_connections{worker="%s"}' % worker] >= 1
        seen[worker] = v
        if len(seen) == 2:
            break
    assert set(seen) == {"0", "1"}, "one worker answered every scrape"


def test_metrics_codes_bytes_and_restarts(start_server):
    s = start_server("--workers", "2")
    assert s.request("GET", "/nope")[0] == 404
    assert s.request("POST", "/metrics", body=b"x")[0] == 405
    status, headers, body = s.request("HEAD", "/metrics")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
    raw = b'{"vendorid":7}\n' * 1000
    packed = gzip.compress(raw)
    assert s.post(packed, {"Content-Encoding": "gzip"})[0] == 200
    v, _, text = scrape(s)
    assert v['ndingest_requests_total{code="404"}'] == 1
    assert v['ndingest_requests_total{code="405"}'] == 1
    assert v["ndingest_body_bytes_total"] == len(packed)
    assert v["ndingest_decoded_bytes_total"] == len(raw)
    assert v["ndingest_written_bytes_total"] == len(b"7,,,\n" * 1000)
    check_histogram(v, text)
    victim = worker_pids(s.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = worker_pids(s.proc.pid)
        if len(pids) == 2 and victim not in pids:
            break
        time.sleep(0.05)
    v2, _, _ = scrape(s)
    assert v2["ndingest_worker_restarts_total"] == 1
    # the dead worker's counts are kept
    assert v2['ndingest_requests_total{code="404"}'] == 1
    assert v2["ndingest_decoded_bytes_total"] == len(raw)


# --- access log, --quiet, error lines ---------------------------------------------------

ACCESS = re.compile(ISO + r"\.\d{3}Z (127\.0\.0\.1:\d+) (\S+) (\S+) (\d{1,3}) (\d+) (\d+) (\d+) (\d+\.\d{3})$")


def test_access_log(start_server, tmp_path):
    log = tmp_path / "access.log"
    s = start_server("--workers", "2", "--access-log", str(log))
    body = b'{"vendorid":1}\nbad\n' * 50
    n, threads_n = 40, 4
    errors = []

    def client():
        try:
            for _ in range(n // threads_n):
                status, _, out = s.post(body)
                assert status == 200 and out == ok_response(len(body), 50, 50)
        except Exception as e:  # reported from the main thread
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert s.request("GET", "/nope?x=1")[0] == 404
    lines = log.read_bytes().decode().split("\n")
    assert lines[-1] == ""  # every line whole
    parsed = []
    for line in lines[:-1]:
        m = ACCESS.match(line)
        assert m, line  # no two workers' lines mixed
        parsed.append(m.groups())
    posts = [p for p in parsed if p[1] == "POST"]
    assert len(posts) == n
    for peer, method, path, status, nbytes, valid, invalid, ms in posts:
        assert (path, status, int(nbytes), int(valid), int(invalid)) == ("/", "200", len(body), 50, 50)
        assert 0 <= float(ms) < 30000
    assert [p[1:7] for p in parsed if p[3] == "404"] == [("GET", "/nope?x=1", "404", "0", "0", "0")]
    assert any(p[1:4] == ("GET", "/healthz", "200") for p in parsed)  # the readiness probe


def test_access_log_unanswered_request(start_server, tmp_path):
    log = tmp_path / "access.log"
    s = start_server("--workers", "1", "--access-log", str(log))
    sock, f = raw_connect(s)
    with sock, f:  # the client leaves mid-body: no response, status 0, the rows dropped
        sock.sendall(b"POST /?src=x HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b'{"vendorid":1}\n' * 10)
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while b" 0 150 " not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    last = log.read_bytes().decode().splitlines()[-1]
    m = ACCESS.match(last)
    assert m and m.groups()[1:7] == ("POST", "/?src=x", "0", "150", "10", "0"), last


def test_bad_access_log_path_fails_at_start(tmp_path):
    import subprocess
    from conftest import BINARY
    p = subprocess.run([str(BINARY), "--listen", "127.0.0.1:1", "--out-dir", str(tmp_path / "o"),
                        "--access-log", str(tmp_path / "no" / "such" / "dir" / "a.log")],
                       capture_output=True, timeout=30)
    assert p.returncode == 1
    assert b"--access-log" in p.stderr


def test_quiet_keeps_errors_with_timestamps(start_server):
    s = start_server("--workers", "2", "--quiet")
    victim = worker_pids(s.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while f"pid {victim}) was killed" not in s.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.stop() == 0
    err = s.stderr()
    assert "listening on" not in err and "stopped after" not in err, err
    lines = err.splitlines()
    assert any(re.match(ISO + rf"Z ndingest: worker \d \(pid {victim}\) was killed by signal 9", l)
               for l in lines), err
    for line in lines:
        assert re.match(ISO + "Z ", line), line


def test_not_quiet_by_default(start_server):
    s = start_server("--workers", "1")
    assert s.stop() == 0
    err = s.stderr()
    assert err.startswith("ndingest: listening on ") and "worker 0 stopped after" in err


# --- header limits ----------------------------------------------------------------------

def test_431_max_header(start_server):
    s = start_server("--workers", "1", "--max-header", "1K")
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 1100 + b"\r\nContent-Length: 2\r\n\r\n{}")
        assert b"--max-header 1024" in assert_error(read_response(f), 431)
        assert_closed(sock, f)
    ok = b"POST / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"v" * 800 + b"\r\nContent-Length: 15\r\n\r\n"
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(ok + b'{"vendorid":5}\n')
        status, _, body = read_response(f)
        assert status == 200 and body == ok_response(15, 1, 0)


def test_431_default_max_header_is_64k(start_server):
    s = start_server("--workers", "1", "--max-headers", "1000")
    big = b"".join(b"X-F-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + big + b"\r\n")
        assert_error(read_response(f), 431)


def test_431_max_headers(start_server):
    s = start_server("--workers", "1", "--max-headers", "5")
    head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 15\r\n"
    sock, f = raw_connect(s)
    with sock, f:  # Host, Content-Length and 3 more: 5
        sock.sendall(head + b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n" + b'{"vendorid":5}\n')
        status, _, body = read_response(f)
        assert status == 200 and body == ok_response(15, 1, 0)
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(head + b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n" + b'{"vendorid":5}\n')
        assert b"--max-headers 5" in assert_error(read_response(f), 431)
        assert_closed(sock, f)
    # the default, 100
    s2 = start_server("--workers", "1")
    many = b"".join(b"X-%d: v\r\n" % i for i in range(100))
    sock, f = raw_connect(s2)
    with sock, f:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
        assert_error(read_response(f), 431)
    assert s.csv_bytes() == b"5,,,\n"


# --- deadlines --------------------------------------------------------------------------

def trickle_until_response(sock, f, data, every=0.2, limit=15):
    """Sends data one byte at a time until the server answers; (response, seconds)."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < limit:
        r, _, _ = select.select([sock], [], [], every)
        if r:
            return read_response(f), time.monotonic() - t0
        if i < len(data):
            try:
                sock.sendall(data[i:i + 1])
            except OSError:
                pass
            i += 1
    raise AssertionError("no response while trickling")


def test_408_header_timeout(start_server):
    s = start_server("--workers", "1", "--header-timeout", "1", "--timeout", "30")
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n")
        resp, took = trickle_until_response(sock, f, b"X-Slow: " + b"a" * 200)
        assert b"--header-timeout 1" in assert_error(resp, 408)
        assert resp[1]["connection"] == "close"
        assert 0.8 <= took < 5, took
        assert_closed(sock, f)
    # a connection that sends nothing is closed once the deadline passes, without a response
    sock, f = raw_connect(s)
    with sock, f:
        t0 = time.monotonic()
        assert_closed(sock, f, timeout=10)
        assert 0.8 <= time.monotonic() - t0 < 5
    # a prompt request on a connection opened a while ago is served (keep-alive)
    sock, f = raw_connect(s)
    with sock, f:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(f)[0] == 200
            time.sleep(0.6)  # idle between requests: the idle --timeout, not the header one
    assert s.request("GET", "/healthz")[0] == 200


def test_body_timeout_cuts_a_trickling_client(start_server):
    s = start_server("--workers", "1", "--body-timeout", "2", "--timeout", "30")
    body = b'{"vendorid":1}\n' * 100
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:300])
        # every byte resets the idle timeout, but not the body's deadline
        resp, took = trickle_until_response(sock, f, body[300:], every=0.25)
        assert b"--body-timeout 2" in assert_error(resp, 408)
        assert 1.8 <= took < 6, took
        assert_closed(sock, f)
    assert s.csv_bytes() == b""  # the cut body's rows are dropped
    status, _, out = s.post(body)  # a body that arrives in time is fine
    assert status == 200 and out == ok_response(len(body), 100, 0)
    v, _, _ = scrape(s)
    assert v['ndingest_requests_total{code="408"}'] == 1


# --- connections ------------------------------------------------------------------------

def test_max_connections(start_server):
    s = start_server("--workers", "1", "--max-connections", "2")
    held = []
    deadline = time.monotonic() + 10
    while len(held) < 2:  # once the readiness probe's connection is seen closed, two fit
        sock, f = raw_connect(s)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        status = read_response(f)[0]
        if status == 200:
            held.append((sock, f))
            continue
        assert status == 503 and time.monotonic() < deadline
        f.close()
        sock.close()
        time.sleep(0.05)
    for _ in range(3):  # the excess gets 503 and the door, and the worker stays up
        sock, f = raw_connect(s)
        with sock, f:
            resp = read_response(f)
            assert b"too many connections" in assert_error(resp, 503)
            assert resp[1]["connection"] == "close"
            assert_closed(sock, f)
    for sock, f in held:  # the held ones still work
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(f)[0] == 200
    sock, f = held.pop()
    f.close()
    sock.close()
    deadline = time.monotonic() + 10
    while True:  # a slot frees when the server has seen the close
        status = s.request("GET", "/healthz")[0]
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == 200
    v, _, _ = scrape(s)
    assert v['ndingest_requests_total{code="503"}'] >= 3
    for sock, f in held:
        f.close()
        sock.close()


# --- inflation limits -------------------------------------------------------------------

@pytest.fixture(scope="module")
def gzip_bomb():
    """About 1.06 GiB of zeros in 17 gzip members of 64 MiB each: about 1.1 MB on the wire."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(1 << 20)
    member = b"".join(c.compress(zero) for _ in range(64)) + c.flush()
    return member * 17


def vm_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_gzip_bomb_is_413_fast_with_bounded_memory(start_server, gzip_bomb):
    assert len(gzip_bomb) < 2_000_000
    s = start_server("--workers", "1")
    worker = worker_pids(s.proc.pid)[0]
    t0 = time.monotonic()
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                     % len(gzip_bomb))
        try:
            sock.sendall(gzip_bomb)
        except OSError:
            pass  # the server may have answered and stopped reading already
        assert b"--max-ratio" in assert_error(read_response(f), 413)
    assert time.monotonic() - t0 < 5
    assert vm_hwm_kb(worker) < 64 * 1024, vm_hwm_kb(worker)
    assert s.request("GET", "/healthz")[0] == 200
    v, _, _ = scrape(s)
    assert v['ndingest_requests_total{code="413"}'] == 1
    assert v["ndingest_decoded_bytes_total"] < 64 << 20  # stopped early, not after 1 GiB


def test_max_inflate(start_server, taxi_body):
    s = start_server("--workers", "1", "--max-inflate", "1M", "--max-ratio", "0")
    big = gzip.compress(taxi_body * 4)  # 2.3 MB inflated
    status, headers, out = s.post(big, {"Content-Encoding": "gzip"})
    assert status == 413 and b"--max-inflate" in out
    assert headers["Connection"] == "close"
    small = gzip.compress(taxi_body)  # 0.6 MB: fine
    status, _, out = s.post(small, {"Content-Encoding": "gzip"})
    assert status == 200 and out == ok_response(len(small), 1600, 0)
    # identity bodies are --max-body's business, not --max-inflate's
    status, _, out = s.post(taxi_body * 4)
    assert status == 200


def test_max_ratio(start_server, taxi_body):
    packed = zlib.compress(taxi_body * 4, 9)
    ratio = len(taxi_body) * 4 / len(packed)
    assert ratio > 4
    s = start_server("--workers", "1", "--max-ratio", "3")
    status, _, out = s.post(packed, {"Content-Encoding": "deflate"})
    assert status == 413 and b"--max-ratio" in out
    # under the 1 MiB floor, no ratio is judged
    small = gzip.compress(taxi_body)
    status, _, out = s.post(small, {"Content-Encoding": "gzip"})
    assert status == 200 and out == ok_response(len(small), 1600, 0)
    s2 = start_server("--workers", "1", "--max-ratio", str(int(ratio) + 5))
    status, _, out = s2.post(packed, {"Content-Encoding": "deflate"})
    assert status == 200 and out == ok_response(len(packed), 6400, 0)
