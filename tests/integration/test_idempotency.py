"""test_idempotency.py -- Idempotency-Key (issue #18): a retry replays the first answer byte for
byte and writes nothing; 409 while the first is in flight on any worker; 422 for another body;
keys scoped by token and dataset; the key log survives a restart (and a kill); the window and
eviction; a request that fails or is abandoned gives its key up; without the header nothing
changes."""
import gzip
import json
import os
import re
import signal
import socket
import time

import pytest

from conftest import (MEMCHECK, ok_response, raw_connect, read_response, today, wait_for,
                      worker_pids)

BODY = b'{"vendorid": 1, "trip_distance": 2.5}\n{"vendorid": 2}\nnot json\n'
KEY = "Idempotency-Key"


def post(s, body=BODY, key=None, path="/", headers=None):
    h = dict(headers or {})
    if key is not None:
        h[KEY] = key
    return s.request("POST", path, body, h)


def raw_exchange(s, request):
    """Sends request bytes on a new connection; returns the response's raw bytes."""
    sock, f = raw_connect(s)
    try:
        sock.sendall(request)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            ch = f.read(1)
            assert ch, head
            head += ch
        n = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        return head + f.read(n)
    finally:
        sock.close()


def raw_post(body, extra=b""):
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body) + extra +
            b"\r\n" + body)


def without_worker(raw):
    """The response less its X-Worker line (which worker answers is the balancer's choice)."""
    return re.sub(rb"X-Worker: \d+\r\n", b"", raw)


def metric(s, name):
    _, _, text = s.request("GET", "/metrics")
    m = re.search(rb"^%s (\d+)$" % name.encode(), text, re.M)
    assert m, text
    return int(m.group(1))


def csv_rows(s):
    return s.csv_bytes().count(b"\n")


def test_without_the_header_nothing_changes(start_server):
    """A request without the header gets today's response, byte for byte, and no key log is
    made; the first keyed request's response is the same bytes too."""
    s = start_server("--workers", "1")
    raw = raw_exchange(s, raw_post(BODY))
    body = ok_response(len(BODY), 2, 1)
    assert raw == (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                   b"X-Worker: 0\r\nConnection: keep-alive\r\n\r\n" % len(body)) + body
    assert not (s.out_dir / ".idempotency").exists()
    assert raw_exchange(s, raw_post(BODY, b'Idempotency-Key: "k1"\r\n')) == raw
    assert csv_rows(s) == 4


def test_replay_is_byte_for_byte_and_writes_nothing(start_server, taxi_body):
    s = start_server("--workers", "2")
    req = raw_post(taxi_body, b'Idempotency-Key: "order-1"\r\n')
    first = raw_exchange(s, req)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    rows = csv_rows(s)
    assert rows == taxi_body.count(b"\n")
    for _ in range(3):
        again = raw_exchange(s, req)
        # the same response with one more header line, whichever worker answers
        head, _, body = without_worker(again).partition(b"\r\n\r\n")
        assert head.endswith(b"\r\nIdempotency-Replayed: true")
        assert head[: -len(b"\r\nIdempotency-Replayed: true")] + b"\r\n\r\n" + body == \
            without_worker(first)
    assert csv_rows(s) == rows
    assert metric(s, "ndingest_idempotency_replays_total") == 3
    assert metric(s, "ndingest_idempotency_keys") == 1


def test_replay_keeps_the_connection_usable(start_server):
    """A replayed request's body is read, so the next request on the connection works."""
    s = start_server("--workers", "1")
    c = s.connection()
    for i in range(3):
        c.request("POST", "/", body=BODY, headers={KEY: '"same"'})
        r = c.getresponse()
        assert r.status == 200 and r.read() == ok_response(len(BODY), 2, 1)
        assert (r.getheader("Idempotency-Replayed") == "true") == (i > 0)
    c.request("POST", "/", body=BODY)  # no key: written
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Idempotency-Replayed") is None
    r.read()
    c.close()
    assert csv_rows(s) == 4


def test_another_body_is_422(start_server):
    s = start_server("--workers", "2")
    assert post(s, key='"k"')[0] == 200
    st, h, out = post(s, BODY + b'{"vendorid": 3}\n', key='"k"')
    assert st == 422, out
    assert "different request" in json.loads(out)["error"]
    assert "Idempotency-Replayed" not in h
    assert csv_rows(s) == 2
    assert metric(s, "ndingest_idempotency_mismatches_total") == 1
    # the recorded outcome stands: the first body still replays
    st, h, out = post(s, key='"k"')
    assert st == 200 and h.get("Idempotency-Replayed") == "true"


def exchange_in_pieces(s, pieces):
    """Sends a request's bytes piece by piece, a pause between them (so that the server reads
    them in pieces of their own); returns the response's status line."""
    sock, f = raw_connect(s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for p in pieces:
            sock.sendall(p)
            time.sleep(0.001)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            ch = f.read(1)
            assert ch, head
            head += ch
        f.read(int(re.search(rb"Content-Length: (\d+)", head).group(1)))
        return head
    finally:
        sock.close()


def chunked(body, key, sizes):
    """A chunked request for body, its chunks of the given sizes in turn, as pieces to send
    (a chunk's size line and data apart, and cut mid-data)."""
    out = [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           b"Idempotency-Key: " + key + b"\r\n\r\n"]
    at, i = 0, 0
    while at < len(body):
        n = sizes[i % len(sizes)]
        data = body[at:at + n]
        out += [b"%x\r\n" % len(data), data[: len(data) // 2], data[len(data) // 2:] + b"\r\n"]
        at += n
        i += 1
    return out + [b"0\r\n\r\n"]


def test_the_fingerprint_is_the_bodys_whatever_its_pieces(start_server, taxi_body):
    """The first request's body is hashed as its lines are framed, a retry's apart (it is not
    parsed): the same bytes in other pieces, or chunked, must give the same fingerprint, and
    a byte changed or added another one. A gzip body's fingerprint is its bytes as received."""
    s = start_server("--workers", "1")
    taxi_body = b"".join(taxi_body.splitlines(keepends=True)[:150])  # ~55 KB: pieces are slow
    plain = raw_post(taxi_body, b'Idempotency-Key: "fp"\r\n')
    assert exchange_in_pieces(s, [plain]).startswith(b"HTTP/1.1 200 OK\r\n")
    rows = csv_rows(s)
    for sizes in ([1, 63, 64, 65, 4096], [7000], [100000]):
        head = exchange_in_pieces(s, chunked(taxi_body, b'"fp"', sizes))
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Idempotency-Replayed: true" in head, \
            (sizes, head)
    cut = [plain[i:i + 997] for i in range(0, len(plain), 997)]
    assert b"Idempotency-Replayed: true" in exchange_in_pieces(s, cut)
    mid = len(taxi_body) // 2
    other = taxi_body[:mid] + (b"7" if taxi_body[mid:mid + 1] != b"7" else b"8") + taxi_body[mid + 1:]
    for body in (other, taxi_body + b" ", taxi_body[:-1]):
        head = exchange_in_pieces(s, [raw_post(body, b'Idempotency-Key: "fp"\r\n')])
        assert head.startswith(b"HTTP/1.1 422 "), head
    # the other way round: a first request sent chunked, in odd pieces; its retry in one
    head = exchange_in_pieces(s, chunked(taxi_body, b'"fp2"', [5, 777, 64]))
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Idempotency-Replayed" not in head
    assert b"Idempotency-Replayed: true" in exchange_in_pieces(
        s, [raw_post(taxi_body, b'Idempotency-Key: "fp2"\r\n')])
    # gzip: the compressed bytes are the body as received
    gz = gzip.compress(taxi_body)
    extra = b'Content-Encoding: gzip\r\nIdempotency-Key: "fp3"\r\n'
    assert exchange_in_pieces(s, [raw_post(gz, extra)]).startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Idempotency-Replayed: true" in exchange_in_pieces(
        s, [raw_post(gz, extra)[i:i + 3000] for i in range(0, len(raw_post(gz, extra)), 3000)])
    head = exchange_in_pieces(s, [raw_post(taxi_body, b'Idempotency-Key: "fp3"\r\n')])
    assert head.startswith(b"HTTP/1.1 422 "), head
    assert csv_rows(s) == rows * 3


@pytest.mark.skipif(MEMCHECK, reason="needs two worker processes")
def test_retry_in_flight_is_409_on_any_worker(start_server):
    """The first request's body trickles on one connection (one worker); retries on new
    connections get 409 whichever worker takes them, then the replay once it is answered."""
    s = start_server("--workers", "2")
    sock, f = raw_connect(s)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: \"slow\"\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY[:10])
    # the key is claimed when the headers are read: wait until it is in the table
    wait_for(lambda: metric(s, "ndingest_idempotency_keys") == 1, what="the claim")
    workers = set()
    for _ in range(6):
        st, h, out = post(s, key='"slow"')
        assert st == 409, out
        assert "still in flight" in json.loads(out)["error"]
        workers.add(h["X-Worker"])
    assert metric(s, "ndingest_idempotency_conflicts_total") == 6
    sock.sendall(BODY[10:])
    st, h, out = read_response(f)
    assert st == 200 and out == ok_response(len(BODY), 2, 1)
    sock.close()
    st, h, out = post(s, key='"slow"')
    assert st == 200 and h.get("Idempotency-Replayed") == "true"
    assert csv_rows(s) == 2
    print("409s answered by workers", sorted(workers), "; the first by", h["X-Worker"])


def test_client_gone_mid_body_releases_the_key(start_server):
    s = start_server("--workers", "1")
    sock = socket.create_connection((s.host, s.port), timeout=30)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: gone\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY[:10])
    wait_for(lambda: metric(s, "ndingest_idempotency_keys") == 1, what="the claim")
    sock.close()
    wait_for(lambda: metric(s, "ndingest_idempotency_keys") == 0, what="the release")
    st, h, out = post(s, key="gone")
    assert st == 200 and "Idempotency-Replayed" not in h
    assert csv_rows(s) == 2


@pytest.mark.skipif(MEMCHECK, reason="kills a worker process")
def test_killed_worker_releases_its_keys(start_server):
    """A worker killed with a key in flight: the main process releases it when it reaps the
    worker, and the retry is processed anew (not 409 for ever)."""
    s = start_server("--workers", "1")
    sock = socket.create_connection((s.host, s.port), timeout=30)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nIdempotency-Key: killed\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY[:10])
    wait_for(lambda: metric(s, "ndingest_idempotency_keys") == 1, what="the claim")
    (w,) = worker_pids(s.proc.pid)
    os.kill(w, signal.SIGKILL)
    sock.close()
    wait_for(lambda: worker_pids(s.proc.pid) and worker_pids(s.proc.pid) != [w],
             what="the replacement worker")
    s.wait_ready()
    st, h, out = post(s, key="killed")
    assert st == 200 and "Idempotency-Replayed" not in h, out


def test_a_4xx_judged_on_the_whole_body_is_replayed(start_server):
    """A gzip body cut short is refused at its end (400): that outcome is recorded and
    replayed; the same key with the whole body is another request (422)."""
    s = start_server("--workers", "1")
    whole = gzip.compress(BODY)
    cut = whole[: len(whole) - 6]
    gz = {"Content-Encoding": "gzip"}
    st, h, first = post(s, cut, key='"gz"', headers=gz)
    assert st == 400 and b"ends before its stream does" in first, first
    st, h, again = post(s, cut, key='"gz"', headers=gz)
    assert (st, again, h.get("Idempotency-Replayed")) == (400, first, "true")
    assert post(s, whole, key='"gz"', headers=gz)[0] == 422
    assert csv_rows(s) == 0


def test_header_errors(start_server):
    s = start_server("--workers", "1", "--max-idempotency-key", "8")
    cases = {
        "more than one Idempotency-Key field": [(KEY, '"a"'), (KEY, '"b"')],
        "the Idempotency-Key is empty": [(KEY, '""')],
        "longer than --max-idempotency-key 8 bytes": [(KEY, '"123456789"')],
        "malformed Idempotency-Key": [(KEY, '"a", "b"')],
    }
    for want, headers in cases.items():
        sock, f = raw_connect(s)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n" +
                     b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in headers) +
                     b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
        st, _, out = read_response(f)
        sock.close()
        assert st == 400 and want in json.loads(out)["error"], (want, out)
    for bad in ['"a', '"a";p=1', '1abc', '"\\n"']:
        st, _, out = post(s, key=bad)
        assert st == 400 and "malformed" in json.loads(out)["error"], (bad, out)
    # exactly the limit, escapes unescaped first; a bare token
    assert post(s, key='"1234567\\\\"')[0] == 200
    assert post(s, key="tok:1/2")[0] == 200
    assert post(s, key="tok:1/2")[1].get("Idempotency-Replayed") == "true"
    assert csv_rows(s) == 4
    # the header means nothing to other routes
    assert s.request("GET", "/healthz", headers={KEY: '""'})[0] == 200


EVENTS = """SCHEMA >
    `id` Int64 `json:$.id`,
    `tag` String `json:$.tag`
"""


@pytest.fixture
def datasets(tmp_path):
    d = tmp_path / "defs"
    d.mkdir()
    for name in ("trips", "zones"):
        (d / f"{name}.datasource").write_text(EVENTS)
    tok = tmp_path / "tokens"
    tok.write_text("alpha-tok\nbeta-tok\n")
    return d, tok


def events(s, name, token, key, body=b'{"id": 1, "tag": "a"}\n', wait=False):
    q = f"name={name}" + ("&wait=true" if wait else "")
    return s.request("POST", f"/v0/events?{q}", body,
                     {"Authorization": f"Bearer {token}", KEY: key})


def lines(s, name):
    p = s.out_dir / f"{name}-{today(utc=True)}.csv"
    return p.read_bytes().count(b"\n") if p.exists() else 0


def test_scoped_by_token_and_dataset(start_server, datasets):
    d, tok = datasets
    s = start_server("--workers", "2", "--utc", "--datasets", str(d), "--token-file", str(tok),
                     "--default-dataset", "zones")
    st, h, first = events(s, "trips", "alpha-tok", '"k"')
    assert (st, first) == (202, b'{"successful_rows": 1, "quarantined_rows": 0}\n')
    # another token: another key
    st, h, out = events(s, "trips", "beta-tok", '"k"')
    assert st == 202 and "Idempotency-Replayed" not in h
    # another dataset: another key (POST / appends to zones)
    st, h, out = events(s, "zones", "alpha-tok", '"k"')
    assert st == 202 and "Idempotency-Replayed" not in h
    st, h, out = s.request("POST", "/", b'{"id": 1, "tag": "a"}\n',
                           {"Authorization": "Bearer alpha-tok", KEY: '"k"'})
    assert st == 200 and "Idempotency-Replayed" not in h  # POST / (to zones): another route
    st, h, out = events(s, "trips", "alpha-tok", '"k"')
    assert (st, out, h.get("Idempotency-Replayed")) == (202, first, "true")
    assert lines(s, "trips") == 2 and lines(s, "zones") == 2


def test_wait_true_replays_200(start_server, datasets):
    d, _ = datasets
    s = start_server("--workers", "1", "--utc", "--datasets", str(d))
    st, _, first = s.request("POST", "/v0/events?name=trips&wait=true", b'{"id": 1}\n',
                             {KEY: "w"})
    assert st == 200
    st, h, out = s.request("POST", "/v0/events?name=trips&wait=true", b'{"id": 1}\n',
                           {KEY: "w"})
    assert (st, out, h.get("Idempotency-Replayed")) == (200, first, "true")


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_replayed_after_a_restart(start_server, tmp_path, how):
    """The key's record is in the key log before its 200: a server started again (after a
    clean stop, or after every process was killed) replays it."""
    out = tmp_path / "out"
    s = start_server("--workers", "2", out_dir=out)
    st, h, first = post(s, key='"restart"')
    assert st == 200
    if how == "sigterm":
        s.stop()
    else:
        s.kill_all(worker_pids(s.proc.pid))
    s2 = start_server("--workers", "2", out_dir=out)
    st, h, again = post(s2, key='"restart"')
    assert (st, again, h.get("Idempotency-Replayed")) == (200, first, "true")
    assert csv_rows(s2) == 2
    assert "idempotency keys loaded" in s2.stderr()
    if how == "sigkill":
        s.proc.returncode = 0  # killed on purpose: the fixture's exit check is for s2


def test_a_deleted_key_log_is_made_again(start_server, tmp_path):
    """The key log's name is asked after at most once a second (a syscall per loop turn
    otherwise): records written within the second of a deletion go with the deleted file,
    as every record before them did; the first write after it makes a new file, which a
    restart then loads."""
    import shutil
    out = tmp_path / "out"
    s = start_server("--workers", "1", out_dir=out)
    assert post(s, key='"before"')[0] == 200
    shutil.rmtree(out / ".idempotency")
    time.sleep(1.1)
    assert post(s, key='"after-1"')[0] == 200  # written to the nameless file, then again
    assert post(s, key='"after-2"')[0] == 200
    assert list((out / ".idempotency").glob("keys-*.log")), "no new key log"
    s.stop()
    s2 = start_server("--workers", "1", out_dir=out)
    for key in ('"after-1"', '"after-2"'):
        st, h, _ = post(s2, key=key)
        assert (st, h.get("Idempotency-Replayed")) == (200, "true"), key
    st, h, _ = post(s2, key='"before"')  # its record went with the deleted file
    assert st == 200 and "Idempotency-Replayed" not in h


def test_window(start_server):
    s = start_server("--workers", "1", "--idempotency-window", "2")
    assert post(s, key="w")[0] == 200
    assert post(s, key="w")[1].get("Idempotency-Replayed") == "true"
    time.sleep(2.2)
    st, h, _ = post(s, key="w")
    assert st == 200 and "Idempotency-Replayed" not in h  # older than the window: new
    assert csv_rows(s) == 4
    assert metric(s, "ndingest_idempotency_expired_total") == 1


def test_eviction(start_server):
    s = start_server("--workers", "2", "--idempotency-keys", "2")
    for k in ("a", "b", "c"):  # c evicts a, the oldest answered
        assert post(s, key=k)[0] == 200
    assert metric(s, "ndingest_idempotency_evictions_total") == 1
    assert post(s, key="c")[1].get("Idempotency-Replayed") == "true"
    assert post(s, key="b")[1].get("Idempotency-Replayed") == "true"
    st, h, _ = post(s, key="a")  # evicted: processed anew (and evicts c)
    assert st == 200 and "Idempotency-Replayed" not in h
    assert csv_rows(s) == 8
    assert metric(s, "ndingest_idempotency_keys") == 2


def test_a_retry_is_bounded_by_max_body(start_server):
    """A retry's body is read without being ingested, but no more of it than --max-body."""
    s = start_server("--workers", "1", "--max-body", "100")
    assert post(s, key="m")[0] == 200
    big = iter([BODY, b"x" * 200])  # chunked: the size is known only as it arrives
    st, _, out = post(s, big, key="m")
    assert st == 413 and "--max-body 100" in json.loads(out)["error"], out
    assert post(s, key="m")[1].get("Idempotency-Replayed") == "true"
