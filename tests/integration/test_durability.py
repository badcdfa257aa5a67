"""test_durability.py -- SIGHUP (reopen the day's files and the access log for logrotate,
re-read --token-file), --token-file bearer authentication, and --fsync none|request|interval."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BINARY, free_port, ok_response, read_response, today, worker_pids

AUTH = "Authorization"


def rows_body(start, n):
    return b"".join(b'{"vendorid":%d}\n' % i for i in range(start, start + n))


def rows_csv(start, n):
    return b"".join(b"%d,,,\n" % i for i in range(start, start + n))


def wait_for(pred, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def sighup(server, workers):
    """SIGHUP to the main process; returns once every worker has acted on it."""
    before = server.stderr().count("reopened its files (SIGHUP)")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.stderr().count("reopened its files (SIGHUP)") >= before + workers,
             "the workers to reopen their files")


# --- SIGHUP -----------------------------------------------------------------------------

def test_sighup_reopens_files_after_rename(start_server, tmp_path):
    log = tmp_path / "access.log"
    s = start_server("--workers", "2", "--access-log", str(log))
    csv = s.out_dir / f"nyc_taxi-{today()}.csv"
    bad = s.out_dir / f"nyc_taxi-{today()}.invalid.ndjson"
    n = 12
    for k in range(n):  # a new connection each: both workers write
        body = rows_body(k * 10, 10) + b"bad %d\n" % k
        status, _, out = s.post(body)
        assert status == 200 and out == ok_response(len(body), 10, 1)
    first_rows = sorted(rows_csv(0, n * 10).splitlines())
    assert sorted(csv.read_bytes().splitlines()) == first_rows
    wait_for(lambda: log.exists() and len(log.read_bytes().splitlines()) >= n + 1, "the access log")

    rotated = tmp_path / "rotated"
    rotated.mkdir()
    os.rename(csv, rotated / "rows.csv")
    os.rename(bad, rotated / "bad.ndjson")
    os.rename(log, rotated / "access.log")
    sighup(s, 2)

    for k in range(n):
        body = rows_body(1000 + k * 10, 10) + b"worse %d\n" % k
        status, _, out = s.post(body)
        assert status == 200 and out == ok_response(len(body), 10, 1)

    old_rows = (rotated / "rows.csv").read_bytes().splitlines()
    new_rows = csv.read_bytes().splitlines()
    assert sorted(old_rows) == first_rows  # nothing after the reopen went to the old file
    assert sorted(new_rows) == sorted(rows_csv(1000, n * 10).splitlines())
    assert sorted((rotated / "bad.ndjson").read_bytes().splitlines()) == sorted(b"bad %d" % k for k in range(n))
    assert sorted(bad.read_bytes().splitlines()) == sorted(b"worse %d" % k for k in range(n))

    old_log = (rotated / "access.log").read_bytes().splitlines()
    wait_for(lambda: log.exists() and len(log.read_bytes().splitlines()) >= n, "the new access log")
    new_log = log.read_bytes().splitlines()
    # healthz polls of start-up and the n posts before; exactly the n posts after
    assert sum(b" POST / 200 " in l for l in old_log) == n
    assert all(b" POST / 200 " in l for l in new_log) and len(new_log) == n


def test_sighup_without_rename_keeps_appending(start_server):
    s = start_server("--workers", "2")
    csv = s.out_dir / f"nyc_taxi-{today()}.csv"
    assert s.post(rows_body(0, 5))[0] == 200
    sighup(s, 2)
    assert s.post(rows_body(5, 5))[0] == 200
    assert sorted(csv.read_bytes().splitlines()) == sorted(rows_csv(0, 10).splitlines())
    assert s.files() == [csv]


def test_sighup_new_file_gets_its_header(start_server):
    s = start_server("--workers", "2", "--header")
    csv = s.out_dir / f"nyc_taxi-{today()}.csv"
    header = b"vendorid,tpep_pickup_datetime,trip_distance,total_amount\n"
    assert s.post(rows_body(0, 3))[0] == 200
    os.rename(csv, s.out_dir.parent / "old.csv")
    sighup(s, 2)
    for k in range(4):
        assert s.post(rows_body(10 + k, 1))[0] == 200
    assert (s.out_dir.parent / "old.csv").read_bytes() == header + rows_csv(0, 3)
    data = csv.read_bytes()
    assert data.startswith(header) and data.count(header) == 1
    assert sorted(data[len(header):].splitlines()) == sorted(rows_csv(10, 4).splitlines())


def test_sighup_workers_0(start_server):
    s = start_server("--workers", "0")
    csv = s.out_dir / f"nyc_taxi-{today()}.csv"
    assert s.post(rows_body(0, 3))[0] == 200
    os.rename(csv, s.out_dir.parent / "old.csv")
    sighup(s, 1)
    assert s.post(rows_body(3, 3))[0] == 200
    assert (s.out_dir.parent / "old.csv").read_bytes() == rows_csv(0, 3)
    assert csv.read_bytes() == rows_csv(3, 3)


# --- --token-file ------------------------------------------------------------------------

def test_token_required(start_server, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret-token \t\r\nsecond line ignored\n")
    s = start_server("--workers", "2", "--token-file", str(tok))
    csv = s.out_dir / f"nyc_taxi-{today()}.csv"
    body = rows_body(0, 4)

    for headers in ({}, {AUTH: "Bearer wrong"}, {AUTH: "Bearer s3cret-toke"}, {AUTH: "Bearer s3cret-tokenX"},
                    {AUTH: "Basic s3cret-token"}, {AUTH: "s3cret-token"}, {AUTH: "Bearer "}):
        status, h, out = s.post(body, headers)
        assert status == 401, (headers, out)
        assert h["WWW-Authenticate"] == "Bearer"
        assert h["Content-Type"] == "application/json"
        assert out.startswith(b'{"error": "') and out.endswith(b'"}\n')
        assert not csv.exists(), "a refused request wrote rows"

    status, _, out = s.post(body, {AUTH: "Bearer s3cret-token"})
    assert status == 200 and out == ok_response(len(body), 4, 0)
    status, _, out = s.post(body, {AUTH: "bearer   s3cret-token"})  # the scheme is case-insensitive
    assert status == 200
    assert csv.read_bytes() == rows_csv(0, 4) * 2

    assert s.request("GET", "/healthz")[0] == 200  # open to probes
    assert s.request("GET", "/metrics")[0] == 401  # protected
    status, _, text = s.request("GET", "/metrics", headers={AUTH: "Bearer s3cret-token"})
    assert status == 200 and b'ndingest_requests_total{code="401"} 8' in text


def test_token_401_closes_without_reading_the_body(start_server, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("abc\n")
    s = start_server("--workers", "1", "--token-file", str(tok))
    sock = socket.create_connection((s.host, s.port), timeout=10)
    f = sock.makefile("rb")
    # a large body announced but not sent: the answer comes from the headers alone
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + rows_body(0, 3))
    status, headers, _ = read_response(f)
    assert status == 401 and headers["connection"] == "close"
    assert headers["www-authenticate"] == "Bearer"
    sock.close()
    assert not s.files()


def test_token_sighup_switches(start_server, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("old\n")
    s = start_server("--workers", "2", "--token-file", str(tok))
    assert s.post(rows_body(0, 1), {AUTH: "Bearer old"})[0] == 200
    tok.write_text("new\n")
    sighup(s, 2)
    for _ in range(6):  # fresh connections: both workers switched
        assert s.post(rows_body(0, 1), {AUTH: "Bearer old"})[0] == 401
        assert s.post(rows_body(0, 1), {AUTH: "Bearer new"})[0] == 200
    # an empty file on SIGHUP keeps the previous token, with an error
    tok.write_text("\n")
    sighup(s, 2)
    assert s.post(rows_body(0, 1), {AUTH: "Bearer new"})[0] == 200
    assert "keeping the previous token" in s.stderr()


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_token_file_missing_or_empty_fails_at_start(tmp_path, content):
    tok = tmp_path / "token"
    if content is not None:
        tok.write_text(content)
    r = subprocess.run([str(BINARY), "--listen", f"127.0.0.1:{free_port()}", "--out-dir", str(tmp_path / "out"),
                        "--token-file", str(tok)], capture_output=True, timeout=20)
    assert r.returncode == 1
    assert b"--token-file" in r.stderr and str(tok).encode() in r.stderr


@pytest.mark.parametrize("content", [" secret\n", "\tsecret\n"])
def test_token_that_can_never_match_fails_at_start(tmp_path, content):
    """Issue #9: blanks after "Bearer " are stripped, so a token starting with one would
    make every request a 401; it is refused at start with one line."""
    tok = tmp_path / "token"
    tok.write_text(content)
    r = subprocess.run([str(BINARY), "--listen", f"127.0.0.1:{free_port()}", "--out-dir", str(tmp_path / "out"),
                        "--token-file", str(tok)], capture_output=True, timeout=20)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "starts with a space or tab" in lines[0] and str(tok) in lines[0], lines


def test_token_sighup_to_one_that_cannot_match_keeps_the_old(start_server, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("old\n")
    s = start_server("--workers", "1", "--token-file", str(tok))
    tok.write_text(" new\n")
    sighup(s, 1)
    assert s.post(rows_body(0, 1), {AUTH: "Bearer old"})[0] == 200
    assert "starts with a space or tab" in s.stderr() and "keeping the previous token" in s.stderr()


# --- --fsync -----------------------------------------------------------------------------

def test_fsync_bad_value():
    for v in ("sometimes", "interval:", "interval:0", "interval:x", "request:1"):
        r = subprocess.run([str(BINARY), "--fsync", v], capture_output=True, timeout=20)
        assert r.returncode == 2 and b"--fsync" in r.stderr, v


def post_concurrently(s, nconn, per_conn, base=0):
    """nconn keep-alive connections posting per_conn bodies each, pipelining two at a time."""
    errors = []

    def client(i):
        try:
            sock = socket.create_connection((s.host, s.port), timeout=30)
            f = sock.makefile("rb")
            for k in range(0, per_conn, 2):
                bodies = [rows_body(base + (i * per_conn + k + j) * 3, 3) + b"x\n" for j in range(2)]
                sock.sendall(b"".join(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                                      % (len(b), b) for b in bodies))
                for b in bodies:
                    status, _, out = read_response(f)
                    assert status == 200 and out == ok_response(len(b), 3, 1), out
            sock.close()
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(nconn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return sorted(rows_csv(base, nconn * per_conn * 3).splitlines())


@pytest.mark.parametrize("mode", ["none", "request", "interval:20"])
def test_fsync_modes_answer_and_write_every_row(start_server, mode):
    s = start_server("--workers", "2", "--fsync", mode)
    expected = post_concurrently(s, 8, 10)
    csv = s.out_dir / f"nyc_taxi-{today()}.csv"
    assert sorted(csv.read_bytes().splitlines()) == expected
    bad = s.out_dir / f"nyc_taxi-{today()}.invalid.ndjson"
    assert bad.read_bytes() == b"x\n" * 80
    # failures still answer as before
    assert s.post(b"\x1f\x8b garbage", {"Content-Encoding": "gzip"})[0] == 400
    assert s.request("GET", "/healthz")[0] == 200


def test_fsync_request_is_group_committed_before_the_responses(tmp_path):
    strace = shutil.which("strace")
    if not strace:
        pytest.skip("strace is not installed: cannot observe fdatasync")
    trace = tmp_path / "trace"
    port = free_port()
    proc = subprocess.Popen([strace, "-f", "-s", "65536", "-e", "trace=fdatasync,writev,write", "-o",
                             str(trace), str(BINARY),
                             "--listen", f"127.0.0.1:{port}", "--out-dir", str(tmp_path / "out"),
                             "--workers", "1", "--fsync", "request", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.skip("strace could not run ndingest here (ptrace not permitted?)")
                time.sleep(0.05)
        rounds, n = 8, 8
        for r in range(rounds):
            socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
            body = rows_body(r * 100, 2)
            req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            for sk in socks:  # all sent before any answer is read: one loop turn may see them all
                sk.sendall(req)
            for sk in socks:
                status, _, out = read_response(sk.makefile("rb"))
                assert status == 200 and out == ok_response(len(body), 2, 0)
                sk.close()
    finally:
        # strace does not pass SIGTERM on: stop ndingest (strace's child) itself
        for pid in worker_pids(proc.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    lines = trace.read_text().splitlines()
    row_write = re.compile(r'write\(\d+, "(\d+,,,[^"]*)"')
    # One write(2) may carry the rows of several requests (those finished in one loop turn).
    # At every response, at least as many rows must precede the latest fdatasync as the
    # responses sent by then acknowledged (two each).
    rows = synced = sent = syncs = writes = 0
    for line in lines:
        m = row_write.search(line)
        if m:
            rows += m.group(1).count("\\n")
            writes += 1
        elif "fdatasync(" in line and "= 0" in line:
            synced = rows
            syncs += 1
        elif "writev(" in line and "HTTP/1.1 200" in line:
            sent += 1
            assert 2 * sent <= synced, f"response {sent} went out before its rows were fdatasync'd"
    assert rows == 2 * sent == 2 * rounds * n, (rows, sent)
    assert syncs < sent, f"{syncs} fdatasyncs for {sent} requests: no group commit"
    assert writes < sent, f"{writes} row writes for {sent} requests: each request wrote alone"
    print(f"{syncs} fdatasync(s) and {writes} row write(s) for {sent} requests")


FAIL_SYNC_SHIM = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
int fdatasync(int fd)
{
    (void)fd;
    const char *flag = getenv("NDINGEST_TEST_FAIL_SYNC");
    if (flag && access(flag, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    return 0;
}
"""


def test_fsync_request_failure_is_500(start_server, tmp_path):
    cc = shutil.which("cc")
    if not cc or os.environ.get("NDINGEST_SANITIZED") or os.environ.get("NDINGEST_WRAPPER"):
        pytest.skip("needs cc and an uninstrumented binary for an LD_PRELOAD fdatasync shim")
    src, shim, flag = tmp_path / "shim.c", tmp_path / "shim.so", tmp_path / "fail-now"
    src.write_text(FAIL_SYNC_SHIM)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(shim), str(src)], check=True, timeout=60)
    env = dict(os.environ, LD_PRELOAD=str(shim), NDINGEST_TEST_FAIL_SYNC=str(flag))
    s = start_server("--workers", "1", "--fsync", "request", env=env)
    assert s.post(rows_body(0, 2))[0] == 200
    flag.touch()
    status, _, out = s.post(rows_body(4, 2))
    assert status == 500 and b"fdatasync" in out and b"Input/output error" in out, out
    assert "500: fdatasync" in s.stderr()
    flag.unlink()
    status, _, out = s.post(rows_body(6, 2))
    assert status == 200 and out == ok_response(len(rows_body(6, 2)), 2, 0)
