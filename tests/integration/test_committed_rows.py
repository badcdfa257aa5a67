"""test_committed_rows.py -- the committed rows of a day file are exactly the rows of its
acknowledged requests (issue #18): what a request wrote before it failed (its client gone
mid-body, its framing broken, a full disk, its worker killed) is listed in the file's .void
record, and scripts/ndingest-check and delivery skip it. The rows stay in the file."""
import http.client
import importlib.machinery
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, today, worker_pids, wait_for

CHECK = ROOT / "scripts" / "ndingest-check"
PAD = b"p" * 200
# A body's rows are written in batches of 1 MiB of CSV (worker.c): ~5,000 of these rows.
BATCH_ROWS = 5000


def load_check():
    loader = importlib.machinery.SourceFileLoader("ndingest_check", str(CHECK))
    spec = importlib.util.spec_from_loader("ndingest_check", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def body_of(first, n):
    """n lines whose ids first..first+n-1 mark them; ~220 bytes of CSV each."""
    return b"".join(b'{"id":%d,"pad":"%s"}\n' % (first + i, PAD) for i in range(n))


def committed_ids(s):
    """The ids of the rows of every day file outside its void ranges (every range, whatever
    its reason), and the void ranges' reasons."""
    check = load_check()
    ids, reasons = [], []
    for p in s.files("*.csv"):
        data = p.read_bytes()
        voids = check.load_voids(p, len(data))
        rec = Path(f"{p}.void")
        if rec.exists():
            reasons += [l.split()[2].decode() for l in rec.read_bytes().split(b"\n")[:-1]]
        at = 0
        for a, b in voids + [[len(data), len(data)]]:
            for line in data[at:a].split(b"\n")[:-1]:
                head, _, rest = line.partition(b",")
                assert rest == PAD, line[:80]  # every committed row is a whole row
                ids.append(int(head))
            at = b
    return ids, reasons


def acked_ids(acked):
    return sorted(i for first, n in acked for i in range(first, first + n))


def assert_committed(s, acked, reasons_must=()):
    ids, reasons = committed_ids(s)
    assert len(ids) == len(set(ids)), "a committed row twice"
    assert sorted(ids) == acked_ids(acked), (len(ids), len(acked_ids(acked)))
    for r in reasons_must:
        assert r in reasons, reasons
    r = subprocess.run([sys.executable, str(CHECK), "--columns", "2", *map(str, s.files("*.csv"))],
                       capture_output=True, timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 0, out
    rows = sum(int(l.split(": ")[1].split()[0]) for l in out.splitlines() if l.endswith(", ok"))
    assert rows == len(acked_ids(acked)), out
    return ids, reasons


def post_ok(s, first, n):
    status, _, out = s.post(body_of(first, n))
    assert status == 200, out
    return (first, n)


def csv_size(s):
    return sum(p.stat().st_size for p in s.files("*.csv"))


def start(start_server, *args, **kw):
    return start_server("--workers", "2", "--columns", "id,pad", *args, **kw)


def send_head(s, length=None, chunked=False):
    sock = socket.create_connection((s.host, s.port), timeout=30)
    head = b"POST / HTTP/1.1\r\nHost: x\r\n"
    head += b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % length
    sock.sendall(head + b"\r\n")
    return sock


def metric(s, name):
    _, _, text = s.request("GET", "/metrics")
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_client_gone_mid_body_voids_its_batches(start_server):
    s = start(start_server)
    acked = [post_ok(s, 0, 100)]
    n = 4 * BATCH_ROWS
    body = body_of(1_000_000, n)
    sock = send_head(s, len(body) + 1000)  # more is announced than will ever come
    sock.sendall(body)
    wait_for(lambda: csv_size(s) > 3 * (1 << 20), what="three batches of the body written")
    acked.append(post_ok(s, 2_000_000, 100))
    sock.close()  # gone mid-body: its batches are void
    wait_for(lambda: metric(s, "ndingest_void_rows_total") > 0, what="the void rows counted")
    acked.append(post_ok(s, 3_000_000, 100))
    ids, reasons = assert_committed(s, acked, ["failed"])
    written = sum(p.stat().st_size for p in s.files("*.csv"))
    assert written > 3 * (1 << 20)  # the rows stay in the file
    assert metric(s, "ndingest_void_rows_total") >= 3 * BATCH_ROWS
    assert metric(s, "ndingest_void_bytes_total") > 3 * (1 << 20)


def test_broken_framing_after_batches_voids_them(start_server):
    s = start(start_server)
    acked = [post_ok(s, 0, 100)]
    body = body_of(1_000_000, 3 * BATCH_ROWS)
    sock = send_head(s, chunked=True)
    for i in range(0, len(body), 65536):
        part = body[i:i + 65536]
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    wait_for(lambda: csv_size(s) > 2 * (1 << 20), what="two batches of the body written")
    sock.sendall(b"zz\r\n")  # not a chunk size
    sock.settimeout(10)
    answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    sock.close()
    acked.append(post_ok(s, 2_000_000, 100))
    assert_committed(s, acked, ["failed"])


@pytest.fixture
def small_disk(tmp_path):
    from test_faults import mounted_tmpfs
    yield from mounted_tmpfs(tmp_path, "disk", "size=6m")


def test_disk_full_mid_body_voids_what_was_written(small_disk, start_server):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (1 << 20))
    s = start(start_server, "--no-quarantine", "--min-free", "0", out_dir=small_disk)
    acked = [post_ok(s, 0, 100)]
    # 6 MiB of disk, 1 of them taken: batches go in until one is refused part way
    status, _, out = s.post(body_of(1_000_000, 8 * BATCH_ROWS))
    assert status == 500, out
    assert b"No space left on device" in out, out
    assert csv_size(s) > 2 * (1 << 20)
    # the record could not take the range either: it is recorded once there is room, and
    # until then the range stays in flight (delivery holds back)
    filler.unlink()
    wait_for(lambda: "failed" in committed_ids(s)[1], what="the void range recorded")
    acked.append(post_ok(s, 2_000_000, 100))
    assert_committed(s, acked, ["failed"])


def fill(disk):
    """Fills what is left of the disk with a file, which it returns."""
    filler = disk / "filler-rest"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def half_written_body(s):
    """A body whose first two batches are written and which never ends: its socket."""
    body = body_of(1_000_000, 3 * BATCH_ROWS)
    sock = send_head(s, len(body) + 1000)
    sock.sendall(body)
    wait_for(lambda: csv_size(s) > 2 * (1 << 20), what="two batches of the body written")
    return sock


def kill_whole(s):
    """Every process of the server dies at once: frozen first, so that none can void
    anything or reap another, then kill -9."""
    everyone = [s.proc.pid] + worker_pids(s.proc.pid)
    for p in everyone:
        os.kill(p, signal.SIGSTOP)
    for p in everyone:
        os.kill(p, signal.SIGKILL)
    s.proc.wait()
    s.proc.returncode = 0  # killed on purpose: the fixture's exit check is for the next one


def held_after_a_kill(small_disk, start_server):
    """One worker, 100 rows acknowledged (ids 0-99), a body half written, the disk filled and
    the worker killed: the main process holds the body's range, and a replacement serves.
    The server, the body's socket and the filler."""
    s = start_server("--workers", "1", "--columns", "id,pad", "--no-quarantine", "--min-free", "0",
                     out_dir=small_disk)
    time.sleep(1.2)  # a worker killed in its first second is replaced a second later
    post_ok(s, 0, 100)
    sock = half_written_body(s)
    filler = fill(small_disk)
    (victim,) = worker_pids(s.proc.pid)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: "held (delivery holds back" in s.stderr(), what="the range held")
    wait_for(lambda: (lambda p: len(p) == 1 and victim not in p)(worker_pids(s.proc.pid)),
             what="a replacement worker")
    return s, sock, filler


def test_worker_killed_on_a_full_disk_holds_its_ranges_until_room(small_disk, start_server):
    """A worker dies with a body's batches unanswered while the disk is full: the main process
    cannot add their range to the .void record, so it holds the range (delivery holds back
    before it) and tries again every second, and replaces the worker meanwhile. Once there is
    room the range is void, and the committed rows are the acknowledged ones."""
    s, sock, filler = held_after_a_kill(small_disk, start_server)
    acked = [(0, 100)]
    time.sleep(1.5)  # a try or two more, refused
    assert "killed" not in committed_ids(s)[1]
    filler.unlink()
    wait_for(lambda: "killed" in committed_ids(s)[1], what="the held range voided")
    wait_for(lambda: "are void now" in s.stderr(), what="the held range's line logged")
    sock.close()
    acked.append(post_ok(s, 2_000_000, 100))
    assert_committed(s, acked, ["killed"])
    assert metric(s, "ndingest_void_rows_total") >= 2 * BATCH_ROWS


def test_held_range_not_voided_in_a_new_file_of_the_same_name(small_disk, start_server):
    """A range is held (as above), and the operator frees the disk by deleting the day file:
    the next rows go to a new file of the same name. The held range was written to the old
    one, so it is dropped, not recorded against the new file, whose acknowledged rows at
    those offsets stay committed. The main process is frozen meanwhile, so that its next try
    comes only once the new file exists."""
    s, sock, filler = held_after_a_kill(small_disk, start_server)
    sock.close()
    os.kill(s.proc.pid, signal.SIGSTOP)
    try:
        (day,) = s.files("*.csv")
        day.unlink()
        filler.unlink()
        acked = [post_ok(s, 3_000_000, 2 * BATCH_ROWS + 1000)]  # past the held range's end
        assert day.exists()
    finally:
        os.kill(s.proc.pid, signal.SIGCONT)
    wait_for(lambda: "of a day file that is gone were not voided" in s.stderr(),
             what="the held range dropped")
    assert committed_ids(s)[1] == []  # no range recorded against the new file
    assert_committed(s, acked)


def test_whole_server_killed_then_a_full_disk_at_start_holds_until_room(small_disk, start_server):
    """The whole server dies with a body half written, and the next start finds the disk full:
    it cannot add the dead server's range to the .void record, so it holds the range as a
    dead worker's (above) and serves, and the dead server's file, which still lists the
    range, stays: this start's own could not be made on the full disk. So when this one dies
    whole too, the start after it finds the range again. Once there is room it is void."""
    s = start(start_server, "--no-quarantine", "--min-free", "0", out_dir=small_disk)
    acked = [post_ok(s, 0, 100)]
    sock = half_written_body(s)
    kill_whole(s)
    sock.close()
    filler = fill(small_disk)
    for _ in range(2):
        s2 = start(start_server, "--no-quarantine", "--min-free", "0", out_dir=small_disk)
        err = s2.stderr()
        assert "held (delivery holds back" in err, err
        assert err.index("held (") < err.index("listening on"), err  # before any connection
        assert "is kept: it lists ranges" in err, err
        time.sleep(1.5)  # a try or two more, refused
        assert "killed" not in committed_ids(s2)[1]
        kill_whole(s2)
    s3 = start(start_server, "--no-quarantine", "--min-free", "0", out_dir=small_disk)
    filler.unlink()
    wait_for(lambda: "killed" in committed_ids(s3)[1], what="the held range voided")
    acked.append(post_ok(s3, 2_000_000, 100))
    assert_committed(s3, acked, ["killed"])


def test_worker_killed_mid_body_voids_its_ranges(start_server):
    s = start_server("--workers", "1", "--columns", "id,pad")
    time.sleep(1.2)  # a worker killed in its first second is replaced a second later
    acked = [post_ok(s, 0, 100)]
    body = body_of(1_000_000, 4 * BATCH_ROWS)
    sock = send_head(s, len(body) + 1000)
    sock.sendall(body)
    wait_for(lambda: csv_size(s) > 3 * (1 << 20), what="three batches of the body written")
    (victim,) = worker_pids(s.proc.pid)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: (lambda p: len(p) == 1 and victim not in p)(worker_pids(s.proc.pid)),
             what="a replacement worker")
    sock.close()
    s.wait_ready()
    acked.append(post_ok(s, 2_000_000, 100))
    assert_committed(s, acked, ["killed"])
    assert metric(s, "ndingest_void_rows_total") >= 3 * BATCH_ROWS


def test_whole_server_killed_mid_body_voided_at_next_start(start_server, tmp_path):
    """Every process of the server dies at once (frozen, then kill -9) while a body is half
    written: nobody is left to void its batches, so the next start on the same out dir does,
    from the dead server's in-flight tables (a file, OUT/.inflight/PID), before it accepts a
    connection. The client's retry of that body then commits its rows once."""
    out = tmp_path / "out"
    s = start(start_server, out_dir=out)
    acked = [post_ok(s, 0, 100)]
    body = body_of(1_000_000, 4 * BATCH_ROWS)
    sock = send_head(s, len(body) + 1000)
    sock.sendall(body)
    wait_for(lambda: csv_size(s) > 3 * (1 << 20), what="three batches of the body written")
    kill_whole(s)
    sock.close()
    assert [p.name.split("-")[0] for p in (out / ".inflight").iterdir()] == [str(s.proc.pid)]
    s2 = start(start_server, out_dir=out)
    err = s2.stderr()
    assert "voided what 1 server that died whole had in flight" in err, err
    assert err.index("voided what") < err.index("listening on"), err  # before any connection
    assert [p.name.split("-")[0] for p in (out / ".inflight").iterdir()] == [str(s2.proc.pid)]
    acked.append(post_ok(s2, 1_000_000, 4 * BATCH_ROWS))  # the retry
    assert_committed(s2, acked, ["killed"])
    assert metric(s2, "ndingest_void_rows_total") >= 3 * BATCH_ROWS


def test_kills_under_load_commit_acked_rows_once(start_server):
    s = start_server("--workers", "2", "--columns", "id,pad")
    lines = 10000  # two batches of 1 MiB written while the body streams, the rest at its end
    acked, unanswered, lock, stop = [], [], threading.Lock(), threading.Event()

    def client(k):
        seq = 0
        conn = None
        while not stop.is_set():
            first = (k * 100_000 + seq) * lines
            seq += 1
            try:
                if conn is None:
                    conn = s.connection(timeout=30)
                conn.request("POST", "/", body=body_of(first, lines))
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    with lock:
                        acked.append((first, lines))
            except (OSError, http.client.HTTPException):
                with lock:
                    unanswered.append((first, lines))
                conn.close()
                conn = None
        if conn:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        for _ in range(6):
            pids = wait_for(lambda: (lambda p: len(p) == 2 and p)(worker_pids(s.proc.pid)),
                            what="two workers")
            os.kill(pids[0], signal.SIGKILL)
            time.sleep(1.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    wait_for(lambda: len(worker_pids(s.proc.pid)) == 2, what="two workers")
    assert len(acked) > 20
    ids, reasons = committed_ids(s)
    assert len(ids) == len(set(ids)), "a committed row twice"
    extra = set(ids) - set(acked_ids(acked))
    missing = set(acked_ids(acked)) - set(ids)
    assert not missing, sorted(missing)[:5]
    # A request committed (its 2xx queued) whose answer the kill cut off is committed
    # without the client knowing (a retry with an Idempotency-Key is replayed): the only
    # rows committed beyond the acknowledged ones are whole such requests.
    for first, n in unanswered:
        part = {i for i in range(first, first + n)} & extra
        assert len(part) in (0, n), (first, len(part), reasons)
        extra -= part
    assert not extra, (len(extra), sorted(extra)[:5], reasons)
    print(f"{len(acked)} acknowledged, {len(unanswered)} unanswered; reasons {sorted(set(reasons))}")


def test_full_table_of_ranges_refuses_with_503(start_server):
    """--inflight-ranges 2, one worker: two stalled bodies hold both entries; a third request
    gets 503 with Retry-After and writes nothing; once they are gone, requests go through."""
    s = start_server("--workers", "1", "--columns", "id,pad", "--inflight-ranges", "2")
    acked = [post_ok(s, 0, 100)]
    socks = []
    for k, first in enumerate((1_000_000, 2_000_000)):
        body = body_of(first, BATCH_ROWS + BATCH_ROWS // 2)  # one batch written, then a stall
        sock = send_head(s, len(body) + 1000)
        sock.sendall(body)
        socks.append(sock)
        wait_for(lambda: csv_size(s) > (k + 1) * (1 << 20), what="the body's first batch written")
    status, headers, out = s.post(body_of(3_000_000, 100))
    assert status == 503, out
    assert headers.get("Retry-After") == "1", headers
    assert b"--inflight-ranges 2" in out, out
    for sock in socks:
        sock.close()
    wait_for(lambda: metric(s, "ndingest_void_rows_total") >= 2 * BATCH_ROWS,
             what="both stalled bodies voided")
    acked.append(post_ok(s, 4_000_000, 100))
    assert_committed(s, acked, ["failed"])


# --- delivery never ships a range that may yet become void ---------------------------------

from test_delivery_postgres import (db, datasets_dir, ids_in, assert_exactly_once,  # noqa: E402,F401
                                    wait_delivered, TABLE)
from test_delivery import lines_for, post as post_events  # noqa: E402


def test_delivery_holds_back_in_flight_rows(postgres, db, start_server, tmp_path):
    postgres.psql(TABLE, db=db)
    d = datasets_dir(tmp_path, ["events"])
    s = start_server("--workers", "2", "--datasets", str(d), "--deliver", postgres.url(db=db),
                     "--deliver-interval", "100", "--deliver-retry-max", "2")
    before = set(range(1, 301))
    assert post_events(s, "events", before)[0] == 200
    wait_delivered(postgres, db, len(before))
    # a slow body: several batches written, then the client stalls
    body = lines_for(range(100_000, 160_000))
    sock = socket.create_connection((s.host, s.port), timeout=30)
    sock.sendall(b"POST /v0/events?name=events HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: %d\r\n\r\n" % (len(body) + 1000))
    sock.sendall(body)
    day = s.out_dir / f"events-{today()}.csv"
    wait_for(lambda: day.exists() and day.stat().st_size > 3 * (1 << 20),
             what="three batches of the stalled body written")
    after = set(range(1000, 1300))  # acknowledged, behind the stalled body's rows
    assert post_events(s, "events", after)[0] == 200
    time.sleep(2)  # twenty delivery intervals: nothing past the stalled body's first byte goes
    assert ids_in(postgres, db) == before
    sock.close()  # gone: its rows are void, and what follows them is delivered
    wait_delivered(postgres, db, len(before | after))
    time.sleep(1)
    assert_exactly_once(postgres, db, before | after)
    rec = Path(f"{day}.void").read_bytes()
    assert b" failed\n" in rec, rec
