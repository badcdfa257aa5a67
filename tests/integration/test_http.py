"""test_http.py -- the HTTP face of ndingest: framings, codings, keep-alive, pipelining and
every error status, checked on the exact response bytes and on the CSV written."""
import collections
import csv
import gzip
import http.client
import io
import json
import random
import shutil
import socket
import subprocess
import time
import zlib

import pytest

import conftest
from conftest import DATA, ok_response, read_response, raw_connect, assert_closed

COLUMNS = ["vendorid", "tpep_pickup_datetime", "trip_distance", "total_amount"]


def taxi_csv(body, columns=COLUMNS):
    """(csv bytes, valid, invalid) computed here from the body: numbers keep their text,
    strings are unescaped, a missing key or null is an empty cell (Python's csv module)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    valid = invalid = 0
    for line in body.split(b"\n"):
        if not line.strip(b" \t\r"):
            continue
        try:
            obj = json.loads(line, parse_int=str, parse_float=str)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            invalid += 1
            continue
        valid += 1
        row = []
        for c in columns:
            v = obj.get(c)
            row.append("" if v is None else "true" if v is True else "false" if v is False else v)
        writer.writerow(row)
    return out.getvalue().encode(), valid, invalid


def lines_counter(data):
    return collections.Counter(data.splitlines(keepends=True))




def assert_json_error(status, headers, body, expect_status):
    assert status == expect_status, body
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    doc = json.loads(body)
    assert list(doc) == ["error"] and doc["error"], body


def chunked(body, sizes):
    """body in HTTP/1.1 chunked framing, cut at the given chunk sizes (cycled)."""
    out, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        out.append(b"%x\r\n%s\r\n" % (n if i + n <= len(body) else len(body) - i, body[i:i + n]))
        i += n
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def post_raw(server, head, payload, timeout=60):
    s, f = raw_connect(server, timeout)
    try:
        s.sendall(head + payload)
        return read_response(f)
    finally:
        f.close()
        s.close()


# --- bodies and framings ------------------------------------------------------------------

def test_healthz(server):
    status, headers, body = server.request("GET", "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body == b'{"status": "ok"}\n'
    assert int(headers["Content-Length"]) == len(body)
    assert headers["X-Worker"] in ("0", "1")


def test_curl_content_length(server, taxi_body):
    out = subprocess.run(["curl", "-sS", "--data-binary", f"@{DATA}", server.url],
                         capture_output=True, timeout=60, check=True).stdout
    expected, valid, invalid = taxi_csv(taxi_body)
    assert valid == 1600 and invalid == 0
    assert out == ok_response(len(taxi_body), valid, invalid)
    assert server.csv_bytes() == expected
    assert server.files("*.csv")[0].name == f"nyc_taxi-{conftest.today()}.csv"


def test_curl_chunked(server, taxi_body):
    out = subprocess.run(["curl", "-sS", "-H", "Transfer-Encoding: chunked", "--data-binary",
                          f"@{DATA}", server.url], capture_output=True, timeout=60, check=True).stdout
    expected, valid, invalid = taxi_csv(taxi_body)
    assert out == ok_response(len(taxi_body), valid, invalid)
    assert server.csv_bytes() == expected


@pytest.mark.parametrize("coding", ["gzip", "deflate", "x-gzip"])
def test_content_encoding(server, taxi_body, tmp_path, coding):
    packed = gzip.compress(taxi_body) if "gzip" in coding else zlib.compress(taxi_body)
    path = tmp_path / "body"
    path.write_bytes(packed)
    out = subprocess.run(["curl", "-sS", "-H", f"Content-Encoding: {coding}", "--data-binary",
                          f"@{path}", server.url], capture_output=True, timeout=60, check=True).stdout
    expected, valid, invalid = taxi_csv(taxi_body)
    # bytes counts the body as received, before content decoding
    assert out == ok_response(len(packed), valid, invalid)
    assert server.csv_bytes() == expected


def test_gzip_chunked_in_small_pieces(server, taxi_body):
    packed = gzip.compress(taxi_body)
    head = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
    status, _, body = post_raw(server, head, chunked(packed, [1, 7, 300, 4096]))
    expected, valid, invalid = taxi_csv(taxi_body)
    assert status == 200 and body == ok_response(len(packed), valid, invalid)
    assert server.csv_bytes() == expected


def test_corrupt_gzip_is_400(server, taxi_body):
    packed = bytearray(gzip.compress(taxi_body))
    packed[len(packed) // 2] ^= 0xFF
    packed[len(packed) // 2 + 1] ^= 0xFF
    status, headers, body = server.post(bytes(packed), {"Content-Encoding": "gzip"})
    assert_json_error(status, headers, body, 400)
    assert server.request("GET", "/healthz")[0] == 200


def test_truncated_gzip_is_400(server, taxi_body):
    packed = gzip.compress(taxi_body)[:-100]
    status, headers, body = server.post(packed, {"Content-Encoding": "gzip"})
    assert_json_error(status, headers, body, 400)


def test_curl_expect_100_continue(server, taxi_body):
    r = subprocess.run(["curl", "-sS", "-v", "-H", "Expect: 100-continue", "--data-binary",
                        f"@{DATA}", server.url], capture_output=True, timeout=60, check=True)
    assert b"HTTP/1.1 100 Continue" in r.stderr
    expected, valid, invalid = taxi_csv(taxi_body)
    assert r.stdout == ok_response(len(taxi_body), valid, invalid)
    assert server.csv_bytes() == expected


def test_expect_100_continue_raw(server, taxi_body):
    s, f = raw_connect(server)
    with s, f:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(taxi_body))
        # the server must invite the body before the client sends any of it
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        s.sendall(taxi_body)
        status, _, body = read_response(f)
    expected, valid, invalid = taxi_csv(taxi_body)
    assert status == 200 and body == ok_response(len(taxi_body), valid, invalid)
    assert server.csv_bytes() == expected


def test_expect_100_continue_rejected_early(start_server):
    s = start_server("--workers", "1", "--max-body", "1K")
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        status, headers, body = read_response(f)  # the final status, not 100
        assert_json_error(status, headers, body, 413)
        assert headers["connection"] == "close"
        assert_closed(sock, f)


def test_chunked_one_byte_chunks(server, taxi_body):
    body = taxi_body[:40_000]
    body = body[:body.rindex(b"\n") + 1]
    head = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    s, f = raw_connect(server)
    with s, f:
        s.sendall(head)
        wire = chunked(body, [1])
        for i in range(0, len(wire), 65536):  # many small chunks per segment, sent in pieces
            s.sendall(wire[i:i + 65536])
        status_line = f.readline()
        assert status_line == b"HTTP/1.1 200 OK\r\n"
        headers = {}
        while (h := f.readline()) != b"\r\n":
            k, _, v = h.decode().partition(":")
            headers[k.lower()] = v.strip()
        got = f.read(int(headers["content-length"]))
    expected, valid, invalid = taxi_csv(body)
    assert got == ok_response(len(body), valid, invalid)
    assert server.csv_bytes() == expected


def test_chunked_random_sizes_http_client(server, taxi_body):
    rnd = random.Random(7)
    pieces, i = [], 0
    while i < len(taxi_body):
        n = rnd.choice([1, 2, 3, 17, 100, 1000, 4093, 65536, 200_000])
        pieces.append(taxi_body[i:i + n])
        i += n
    c = server.connection()
    try:
        for _ in range(2):  # twice on one connection: the pipeline is reused
            c.request("POST", "/", body=iter(pieces), encode_chunked=True,
                      headers={"Transfer-Encoding": "chunked"})
            r = c.getresponse()
            assert r.status == 200
            assert r.read() == ok_response(len(taxi_body), 1600, 0)
    finally:
        c.close()
    expected, _, _ = taxi_csv(taxi_body)
    assert server.csv_bytes() == expected * 2


def test_empty_body(server):
    status, _, body = server.post(b"")
    assert status == 200 and body == ok_response(0, 0, 0)


def test_invalid_lines_counted_and_quarantined(server):
    body = b'{"vendorid":1,"trip_distance":2.5}\nnot json\n\n{"vendorid":"a,b","total_amount":null}\n[1]\n{"vendorid":3}'
    status, _, out = server.post(body)
    expected, valid, invalid = taxi_csv(body)
    assert (valid, invalid) == (3, 2)
    assert status == 200 and out == ok_response(len(body), valid, invalid)
    assert server.csv_bytes() == expected
    assert b"".join(p.read_bytes() for p in server.files("*.invalid.ndjson")) == b"not json\n[1]\n"


def test_no_quarantine(start_server):
    s = start_server("--workers", "1", "--no-quarantine")
    body = b'nope\n{"vendorid":1}\n'
    status, _, out = s.post(body)
    assert status == 200 and out == ok_response(len(body), 1, 1)
    assert s.files("*.invalid.ndjson") == []


# --- connections ------------------------------------------------------------------------

def test_ab_keepalive(server, taxi_body):
    r = subprocess.run(["ab", "-q", "-k", "-n", "200", "-c", "4", "-p", str(DATA), "-T",
                        "application/x-ndjson", server.url], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Complete requests:      200" in r.stdout
    assert "Failed requests:        0" in r.stdout
    assert "Keep-Alive requests:    200" in r.stdout
    assert "Non-2xx" not in r.stdout
    expected, _, _ = taxi_csv(taxi_body)
    # rows of concurrent bodies interleave in the file in whole batches: compare as multisets
    want = lines_counter(expected)
    assert lines_counter(server.csv_bytes()) == collections.Counter({k: v * 200 for k, v in want.items()})


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_keepalive(server, tmp_path):
    script = tmp_path / "post.lua"
    script.write_text('wrk.method = "POST"\n'
                      f'local f = io.open("{DATA}", "rb")\n'
                      'wrk.body = f:read("*all")\nf:close()\n'
                      'wrk.headers["Content-Type"] = "application/x-ndjson"\n')
    r = subprocess.run(["wrk", "-t1", "-c8", "-d2s", "--timeout", "30s", "-s", str(script), server.url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Non-2xx" not in r.stdout, r.stdout
    assert " requests in " in r.stdout and not r.stdout.lstrip().startswith("0 requests"), r.stdout
    assert server.request("GET", "/healthz")[0] == 200


def test_pipelined_requests(server):
    bodies = [b'{"vendorid":%d}\n' % i * (i + 1) for i in range(1, 4)]
    wire = b"".join(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
                    for b in bodies)
    wire += b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    s, f = raw_connect(server)
    with s, f:
        s.sendall(wire)  # one send: the server reads several requests at once
        for b in bodies:
            status, headers, body = read_response(f)
            assert status == 200 and body == ok_response(len(b), b.count(b"\n"), 0)
            assert headers["connection"] == "keep-alive"
        status, _, body = read_response(f)
        assert status == 200 and body == b'{"status": "ok"}\n'
    assert server.csv_bytes() == b"".join(taxi_csv(b)[0] for b in bodies)


def test_large_pipelined_burst_then_half_close(server):
    """Several large requests in one burst, then the client's half-close: the server reads
    far more than one page per wake-up (around libevent's 4 KiB reads), so requests arrive
    mid-read and the end of file comes right after a large read; every one is answered."""
    bodies = [b"".join(b'{"vendorid":%d,"trip_distance":%d.5}\n' % (r, i) for i in range(40000))
              for r in range(1, 4)]
    wire = b"".join(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
                    for b in bodies)
    s, f = raw_connect(server)
    with s, f:
        s.sendall(wire)
        s.shutdown(socket.SHUT_WR)
        for b in bodies:
            status, _, out = read_response(f)
            assert status == 200 and out == ok_response(len(b), 40000, 0)
    assert server.csv_bytes() == b"".join(taxi_csv(b)[0] for b in bodies)


def test_http10_without_keepalive(server):
    body = b'{"vendorid":7}\n'
    s, f = raw_connect(server)
    with s, f:
        s.sendall(b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        status, headers, out = read_response(f)
        assert status == 200 and out == ok_response(len(body), 1, 0)
        assert headers["connection"] == "close"
        assert_closed(s, f)


def test_http10_keepalive(server):
    body = b'{"vendorid":7}\n'
    s, f = raw_connect(server)
    with s, f:
        for _ in range(3):
            s.sendall(b"POST / HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
            status, headers, out = read_response(f)
            assert status == 200 and out == ok_response(len(body), 1, 0)
            assert headers["connection"] == "keep-alive"
            assert int(headers["content-length"]) == len(out)
    assert server.csv_bytes() == b"7,,,\n" * 3


def test_http11_connection_close(server):
    s, f = raw_connect(server)
    with s, f:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        status, headers, _ = read_response(f)
        assert status == 200 and headers["connection"] == "close"
        assert_closed(s, f)


def test_ipv6(start_server, taxi_body):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    s = start_server("--workers", "1", host="::1")
    assert "listening on [::1]:" in s.stderr()
    status, _, body = s.post(taxi_body)
    assert status == 200 and body == ok_response(len(taxi_body), 1600, 0)
    assert s.csv_bytes() == taxi_csv(taxi_body)[0]


def test_idle_timeout_closes(start_server):
    s = start_server("--workers", "1", "--timeout", "1")
    sock, f = raw_connect(s)
    with sock, f:
        t0 = time.monotonic()
        assert_closed(sock, f, timeout=30)
        assert time.monotonic() - t0 >= 0.5
    assert s.request("GET", "/healthz")[0] == 200


def test_timeout_mid_body_drops_the_body(start_server):
    s = start_server("--workers", "1", "--timeout", "1")
    body = b'{"vendorid":1}\n' * 100
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:700])
        assert_closed(sock, f, timeout=30)
    assert s.post(b'{"vendorid":2}\n')[0] == 200
    assert s.csv_bytes() == b"2,,,\n"


def test_client_gone_mid_body(server):
    body = b'{"vendorid":1}\n' * 1000
    for framing in ("length", "chunked"):
        s, f = raw_connect(server)
        with s, f:
            if framing == "length":
                s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5000])
            else:
                s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                          + chunked(body[:5000], [1000])[:-5])
            time.sleep(0.2)
    assert server.post(b'{"vendorid":2}\n')[0] == 200
    assert server.csv_bytes() == b"2,,,\n"


# --- errors -----------------------------------------------------------------------------

def test_404(server):
    s, f = raw_connect(server)
    with s, f:
        s.sendall(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        assert_json_error(*read_response(f), 404)
        # no body was left unread: the connection goes on
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(f)[0] == 200
    s, f = raw_connect(server)
    with s, f:
        s.sendall(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        status, headers, body = read_response(f)
        assert_json_error(status, headers, body, 404)
        assert headers["connection"] == "close"
        assert_closed(s, f)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
def test_405(server, method):
    status, headers, body = server.request(method, "/")
    assert status == 405
    assert headers["Allow"] == "POST"
    assert headers["Content-Type"] == "application/json"
    if method != "HEAD":
        assert_json_error(status, headers, body, 405)


def test_405_healthz(server):
    status, headers, body = server.request("POST", "/healthz", body=b"x")
    assert_json_error(status, headers, body, 405)
    assert "GET" in headers["Allow"]


def test_head_healthz(server):
    status, headers, body = server.request("HEAD", "/healthz")
    assert status == 200 and body == b"" and headers["Content-Length"] == "17"


def test_400_malformed(server):
    for junk in (b"GARBAGE\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                 b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        s, f = raw_connect(server)
        with s, f:
            s.sendall(junk)
            status, headers, body = read_response(f)
            assert_json_error(status, headers, body, 400)
            assert headers["connection"] == "close"
            assert_closed(s, f)
    assert server.csv_bytes() == b""


def test_413_content_length(start_server):
    s = start_server("--workers", "1", "--max-body", "1K")
    body = b'{"vendorid":1}\n' * 100
    status, headers, out = s.post(body)
    assert_json_error(status, headers, out, 413)
    assert headers["Connection"] == "close"
    assert s.csv_bytes() == b""
    status, _, out = s.post(body[:1024])  # exactly the limit is fine
    assert status == 200 and out == ok_response(1024, 68, 1)


def test_413_chunked_overflow(start_server):
    s = start_server("--workers", "1", "--max-body", "1K")
    body = b'{"vendorid":1}\n' * 100
    sock, f = raw_connect(s)
    with sock, f:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(chunked(body, [300]))
        status, headers, out = read_response(f)
        assert_json_error(status, headers, out, 413)
        assert headers["connection"] == "close"
        assert_closed(sock, f)
    assert s.csv_bytes() == b""
    # under the limit, chunked is fine
    status, _, out = post_raw(s, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
                              chunked(body[:600], [7]))
    assert status == 200 and out == ok_response(600, 40, 0)


def test_415(server):
    s, f = raw_connect(server)
    with s, f:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: br\r\nContent-Length: 10\r\n\r\n0123456789")
        status, headers, body = read_response(f)
        assert_json_error(status, headers, body, 415)
        assert "br" in json.loads(body)["error"]
        assert_closed(s, f)
    assert server.csv_bytes() == b""


def test_431(server):
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
    s, f = raw_connect(server)
    with s, f:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n" + big + b"Content-Length: 2\r\n\r\n{}")
        status, headers, body = read_response(f)
        assert_json_error(status, headers, body, 431)
        assert_closed(s, f)
    # just under the limit is served
    ok = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(60))
    status, _, body = post_raw(server, b"POST / HTTP/1.1\r\nHost: t\r\n" + ok + b"Content-Length: 15\r\n\r\n",
                               b'{"vendorid":5}\n')
    assert status == 200 and body == ok_response(15, 1, 0)


def test_500_on_write_error_keeps_serving(start_server, monkeypatch, taxi_body):
    """A file-size limit makes the day's file refuse rows: 500 with the reason, and the
    worker goes on serving (SIGXFSZ is ignored)."""
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit is not installed")
    monkeypatch.setattr(conftest, "WRAPPER", ["prlimit", "--fsize=80000"] + conftest.WRAPPER)
    s = start_server("--workers", "1")
    statuses = []
    for _ in range(3):  # 51 KB of CSV per body: the second one crosses the limit
        status, headers, body = s.post(taxi_body)
        statuses.append(status)
        if status != 200:
            assert_json_error(status, headers, body, 500)
    assert statuses[0] == 200 and 500 in statuses
    assert s.request("GET", "/healthz")[0] == 200
    assert "ndingest[" in s.stderr()
