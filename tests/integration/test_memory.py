"""test_memory.py -- memory does not grow with the body: a worker's peak RSS (VmHWM) after a
~64 MB streamed body stays within a few MiB of its peak after a small one."""
import http.client
import os
import socket
import time
import zlib
from pathlib import Path

import pytest

from conftest import ok_response, read_response, today
import contract
from test_format import TAXI_KEYS

BIG = 64 << 20
GROWTH_LIMIT = 16 << 20

# Under ASan freed memory sits in the sanitizer's quarantine, so peak RSS measures ASan, not
# ndingest; `make asan` sets NDINGEST_SANITIZED and these tests say so instead of running.
pytestmark = pytest.mark.skipif(bool(os.environ.get("NDINGEST_SANITIZED")),
                                reason="peak RSS under ASan measures the sanitizer's quarantine")


def worker_pid(server_pid):
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children")
    if children.exists():
        pids = children.read_text().split()
    else:  # kernels without CONFIG_PROC_CHILDREN: scan for the parent pid
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    stat = (d / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == server_pid:
                    pids.append(d.name)
    assert len(pids) == 1, f"expected one worker under {server_pid}, found {pids}"
    return int(pids[0])


def vm_hwm(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def repeated(body, total):
    """body repeated until about total bytes, in 64 KB pieces, never held whole."""
    sent = 0
    view = memoryview(body)
    while sent < total:
        for i in range(0, len(body), 65536):
            piece = bytes(view[i:i + 65536])
            sent += len(piece)
            yield piece


def gzipped(pieces):
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    for p in pieces:
        out = z.compress(p)
        if out:
            yield out
    yield z.flush()


class Counting:
    """Wraps an iterator of pieces, counting the bytes that went out."""

    def __init__(self, it):
        self.it, self.n = it, 0

    def __iter__(self):
        for p in self.it:
            self.n += len(p)
            yield p


def post_stream(s, pieces, headers):
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=300)
    try:
        counted = Counting(pieces)
        c.request("POST", "/", body=iter(counted), headers=headers, encode_chunked="Content-Length" not in headers)
        r = c.getresponse()
        return r.status, r.read(), counted.n
    finally:
        c.close()


@pytest.mark.parametrize("form", ["chunked", "content-length", "gzip-chunked"])
def test_big_streamed_body_bounded_memory(start_server, taxi_body, form):
    # All 17 columns: the CSV is about half the body, so a server that held the rows of a
    # body until its end would grow by ~30 MB here and fail.
    s = start_server("--workers", "1", "--columns", ",".join(TAXI_KEYS))
    pid = worker_pid(s.proc.pid)
    rows, _, valid1, invalid1 = contract.expected(taxi_body, TAXI_KEYS)
    assert invalid1 == 0

    status, _, resp = s.post(taxi_body)
    assert status == 200 and resp == ok_response(len(taxi_body), valid1, 0)
    small = vm_hwm(pid)

    reps = -(-BIG // len(taxi_body))
    if form == "chunked":
        status, resp, sent = post_stream(s, repeated(taxi_body, BIG), {"Transfer-Encoding": "chunked"})
    elif form == "content-length":
        status, resp, sent = post_stream(s, repeated(taxi_body, BIG),
                                         {"Content-Length": str(reps * len(taxi_body))})
    else:
        status, resp, sent = post_stream(s, gzipped(repeated(taxi_body, BIG)),
                                         {"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"})
    assert status == 200, resp
    assert resp == ok_response(sent, valid1 * reps, 0)
    big = vm_hwm(pid)
    assert worker_pid(s.proc.pid) == pid, "the worker was replaced"
    assert big - small < GROWTH_LIMIT, f"VmHWM grew {(big - small) >> 10} KiB: {small >> 10} -> {big >> 10} KiB"

    csv_path = s.out_dir / f"nyc_taxi-{today()}.csv"
    assert os.path.getsize(csv_path) == len(rows) * (reps + 1)
    with open(csv_path, "rb") as f:  # spot-check the start and the end, not the whole file
        assert f.read(len(rows)) == rows
        f.seek(-len(rows), os.SEEK_END)
        assert f.read() == rows


WIDE_LINE = b'{"vendorid":"' + b"w" * 400 + b'","tpep_pickup_datetime":"2017-01-01 00:00:00"}\n'
WIDE_ROW = b"w" * 400 + b",2017-01-01 00:00:00,,\n"
BAD_LINE = b'{"vendorid":1,"tpep_pickup_datetime":' + b"x" * 300 + b"}\n"


@pytest.mark.parametrize("kind", ["wide-rows", "invalid-lines"])
def test_big_body_of_wide_rows_or_invalid_lines(start_server, kind):
    """Output nearly as big as the input, so that holding a body's rows (or its quarantined
    lines) until its end would show as ~60 MB of growth."""
    s = start_server("--workers", "1")
    pid = worker_pid(s.proc.pid)
    line = WIDE_LINE if kind == "wide-rows" else BAD_LINE
    assert contract.expected(line)[2:] == ((1, 0) if kind == "wide-rows" else (0, 1))
    s.post(line * 100)
    small = vm_hwm(pid)
    block = line * (65536 // len(line))
    status, resp, sent = post_stream(s, repeated(block, BIG), {"Transfer-Encoding": "chunked"})
    assert status == 200, resp
    n = sent // len(line) + 100
    valid, invalid = (n - 100, 0) if kind == "wide-rows" else (0, n - 100)
    assert resp == ok_response(sent, valid, invalid)
    big = vm_hwm(pid)
    assert big - small < GROWTH_LIMIT, f"VmHWM grew {(big - small) >> 10} KiB: {small >> 10} -> {big >> 10} KiB"
    if kind == "wide-rows":
        path = s.out_dir / f"nyc_taxi-{today()}.csv"
        assert os.path.getsize(path) == n * len(WIDE_ROW)
    else:
        path = s.out_dir / f"nyc_taxi-{today()}.invalid.ndjson"
        assert os.path.getsize(path) == n * len(line)
        assert not (s.out_dir / f"nyc_taxi-{today()}.csv").exists()
    last = WIDE_ROW if kind == "wide-rows" else line
    with open(path, "rb") as f:
        f.seek(-len(last), os.SEEK_END)
        assert f.read() == last


def test_long_lines_bounded_by_max_line(start_server):
    """Lines just over --max-line, many of them: skipped without being kept."""
    s = start_server("--workers", "1", "--max-line", "64K", "--no-quarantine")
    pid = worker_pid(s.proc.pid)
    s.post(b'{"vendorid":1}\n')
    small = vm_hwm(pid)
    line = b'{"vendorid":"' + b"x" * (8 << 20) + b'"}\n'  # 8 MiB: far over 64K
    status, resp, sent = post_stream(s, repeated(line, 32 << 20), {"Transfer-Encoding": "chunked"})
    assert status == 200
    n = -(-(32 << 20) // len(line))
    assert resp == ok_response(sent, 0, n)
    assert vm_hwm(pid) - small < GROWTH_LIMIT


def test_pipelining_client_that_never_reads_is_bounded(start_server):
    """Clients that pipeline small requests and never read their answers: each connection
    stops reading once ~256 KiB of responses wait, request by request, however many requests
    one (large) read brought in. Then a reader gets every answer, in order."""
    s = start_server("--workers", "1")
    pid = worker_pid(s.proc.pid)
    status, _, _ = s.request("GET", "/metrics")
    assert status == 200
    before = vm_hwm(pid)
    req = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
    count = 300_000 // len(req)
    wire = req * count
    socks = []
    try:
        for _ in range(16):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            c.sendall(wire)  # fits the socket buffers; the server reads it in large reads
            socks.append(c)
        time.sleep(2)
        grown = vm_hwm(pid) - before
        # Unbounded, each connection would queue ~count answers of ~2.7 KB: ~600 MB here.
        assert grown < 64 << 20, f"VmHWM grew {grown >> 20} MiB"
        f = socks[0].makefile("rb")
        for _ in range(count):
            status, _, _ = read_response(f)
            assert status == 200
        f.close()
    finally:
        for c in socks:
            c.close()
