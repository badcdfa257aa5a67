"""test_exactly_once.py -- issue #18 end to end: clients send 10,000 keyed requests
(Idempotency-Key) over several connections and retry each one, same key and same body, until
it gets a 2xx, while connections are cut at random points, workers are kill -9'd or the disk
fills. Afterwards the committed rows (the day file less the union of its void ranges,
doc/format.md "Void ranges") are the rows sent, each id exactly once; with delivery on, the
PostgreSQL table holds each id exactly once too.

Every row has a unique id. Most bodies are a few rows (text with commas, quotes, line feeds);
about one in a hundred is ~1.3 MB of rows, larger than a worker's batch (1 MiB of CSV,
WORKER_FLUSH_BYTES in src/worker.c; there is no option for it), so its first batch is in the
file before its body has all arrived: a cut, a kill or a full disk then leaves rows of a
request nobody acknowledged. NDINGEST_SEED fixes the plan and the faults (the threads' timing
still varies)."""
import collections
import csv
import io
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, alive, read_response, wait_for, worker_pids
from test_delivery import EVENTS, TEXTS, delivery_pid, wait_caught_up
from test_delivery_postgres import TABLE, assert_exactly_once, db  # noqa: F401 (db: a fixture)
from test_faults import mounted_tmpfs

SEED = int(os.environ.get("NDINGEST_SEED", "18"))
REQUESTS = 10_000
CLIENTS = 6
DEADLINE = 240          # seconds for one run's 10,000 requests, retries and faults included
MAX_TRIES = 400         # a request that needs more is reported, not retried forever
BIG_RATE = 1 / 100      # share of bodies larger than a batch
BIG_ROWS, BIG_CELL = 20, 65_000  # ~1.3 MB of CSV: a 1 MiB batch goes out after 17 rows
BIG_PAUSE = 0.06        # a large body's last part follows after this (a slow client)
CHECK = ROOT / "scripts" / "ndingest-check"


# --- the plan: who sends what --------------------------------------------------------------

class Plan:
    """REQUESTS requests, each (key, first id, rows, big); the ids are 1..total."""

    def __init__(self, seed, n=REQUESTS, big_rate=BIG_RATE):
        rng = random.Random(seed)
        self.reqs = []
        nid = 1
        for r in range(n):
            big = rng.random() < big_rate
            rows = BIG_ROWS if big else rng.randint(1, 6)
            self.reqs.append((f'"eo-{seed}-{r}"', nid, rows, big))
            nid += rows
        self.total = nid - 1

    def body(self, r):
        """Request r's body: the same bytes at every try."""
        _, first, rows, big = self.reqs[r]
        out = []
        for i in range(first, first + rows):
            s = (f"big {i} " + "y" * BIG_CELL) if big else TEXTS[i % len(TEXTS)]
            out.append(json.dumps({"id": i, "host": "h", "n": i % 1000 - 500, "s": s}))
        return ("\n".join(out) + "\n").encode()


def expected_answer(route, body, rows):
    if route == "/":
        return (b'{"result": {"status": "ok", "stats": {"bytes": %d, "records": {"valid": %d, '
                b'"invalid": 0, "total": %d}}}}\n' % (len(body), rows, rows))
    return b'{"successful_rows": %d, "quarantined_rows": 0}\n' % rows


# --- the clients --------------------------------------------------------------------------

def close(conn, reset=False):
    """Closes a (socket, makefile) pair (the descriptor goes with the last of the two), with
    a reset (SO_LINGER 0) instead of a FIN when asked."""
    sock, f = conn
    if reset:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    f.close()
    sock.close()


class Clients:
    """CLIENTS threads, each with one keep-alive raw connection (made again after a cut or an
    error), taking the plan's requests in turn and retrying each (same key, same body) until
    a 2xx: a 409 after a short pause, a 503 after its Retry-After (at most half a second),
    429/500/502/504/507 after 50 ms, a lost connection at once on a new one. cut_rate (and
    big_cut_rate for large bodies) is the chance that a try is cut by the client: mid-headers,
    mid-body or after the body before the response, by a FIN or a reset."""

    def __init__(self, server, plan, route, seed, cut_rate=0.0, big_cut_rate=0.0):
        self.server, self.plan, self.route = server, plan, route
        self.cut_rate, self.big_cut_rate = cut_rate, big_cut_rate
        self.lock = threading.Lock()
        self.next = 0
        self.acked = set()           # request indices answered 2xx
        self.replays = 0
        self.tries = 0
        self.statuses = collections.Counter()
        self.cuts = collections.Counter()
        self.lost = 0                # tries whose connection the server side lost (a kill)
        self.problems = []           # anything a retrying client must never see
        self.paused = {}             # client port -> time: a large body half sent, paused
        self.deadline = time.monotonic() + DEADLINE
        self.threads = [threading.Thread(target=self._run, args=(random.Random(seed * 100 + k),),
                                         daemon=True) for k in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def progress(self):
        with self.lock:
            return len(self.acked)

    def join(self):
        for t in self.threads:
            t.join(max(1.0, self.deadline - time.monotonic() + 30))

    def _take(self):
        with self.lock:
            if self.next >= len(self.plan.reqs):
                return None
            self.next += 1
            return self.next - 1

    def _run(self, rng):
        conn = [None]  # (socket, its makefile)
        try:
            while time.monotonic() < self.deadline:
                r = self._take()
                if r is None:
                    return
                self._send_until_acked(rng, conn, r)
        except Exception as e:  # a client that broke ends the run now, saying why
            with self.lock:
                self.problems.append(("client", repr(e)))
            self.deadline = 0
        finally:
            if conn[0]:
                close(conn[0])

    def _drop(self, conn, reset=False):
        if conn[0]:
            close(conn[0], reset)
            conn[0] = None

    def _send_until_acked(self, rng, conn, r):
        key, _, rows, big = self.plan.reqs[r]
        body = self.plan.body(r)
        head = (f"POST {self.route} HTTP/1.1\r\nHost: ndingest\r\n"
                f"Content-Type: application/x-ndjson\r\nIdempotency-Key: {key}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        want = expected_answer(self.route, body, rows)
        for _ in range(MAX_TRIES):
            if time.monotonic() > self.deadline:
                return
            with self.lock:
                self.tries += 1
            try:
                res = self._try(rng, conn, head, body, big)
            except (OSError, ValueError, IndexError):  # reset, or an answer cut short
                self._drop(conn)
                with self.lock:
                    self.lost += 1
                res = None
            if res is None:
                continue
            status, headers, out = res
            with self.lock:
                self.statuses[status] += 1
            if headers.get("connection", "").lower() == "close":
                self._drop(conn)
            if 200 <= status < 300:
                with self.lock:
                    if out != want:
                        self.problems.append((r, status, out[:200]))
                    self.acked.add(r)
                    self.replays += headers.get("idempotency-replayed") == "true"
                return
            if status == 409:
                time.sleep(rng.uniform(0.01, 0.05))
            elif status == 503:
                time.sleep(min(float(headers.get("retry-after", "1")), 0.5))
            elif status in (429, 500, 502, 504, 507):
                time.sleep(0.05)
            else:  # 422 (the same body is another body?) or any other refusal: a bug
                with self.lock:
                    self.problems.append((r, status, out[:200]))
                return
        with self.lock:
            self.problems.append((r, "gave up", f"{MAX_TRIES} tries"))

    def _try(self, rng, conn, head, body, big):
        """One try: (status, headers, body), or None when the try was cut or lost."""
        rate = self.big_cut_rate if big else self.cut_rate
        cut = None
        if rng.random() < rate:
            cut = rng.choices(("headers", "body", "response"), (1, 2, 1))[0]
        reset = rng.random() < 0.5
        if conn[0] is None:
            sock = socket.create_connection((self.server.host, self.server.port), timeout=60)
            conn[0] = (sock, sock.makefile("rb"))
        sock, f = conn[0]
        if cut == "headers":
            sock.sendall(head[:rng.randint(1, len(head) - 1)])
        elif cut == "body":
            # a large body is cut past its first batch half of the time
            lo = int(len(body) * 0.9) if big and rng.random() < 0.5 else 1
            sock.sendall(head + body[:rng.randint(lo, len(body) - 1)])
            time.sleep(0.02 if big else 0.002)  # the server has read what was sent
        elif big:
            split = int(len(body) * 0.9)
            sock.sendall(head + body[:split])
            port = sock.getsockname()[1]
            with self.lock:
                self.paused[port] = time.monotonic()
            try:
                time.sleep(BIG_PAUSE)
                sock.sendall(body[split:])
            finally:
                with self.lock:
                    self.paused.pop(port, None)
        else:
            sock.sendall(head + body)
        if cut == "response":
            time.sleep(rng.uniform(0, 0.003))
        if cut:
            with self.lock:
                self.cuts[cut] += 1
            self._drop(conn, reset)
            return None
        res = read_response(f)
        if res is None:
            with self.lock:
                self.lost += 1
            self._drop(conn)
        return res

    def summary(self):
        return (f"{len(self.acked)}/{len(self.plan.reqs)} requests acknowledged in {self.tries} "
                f"tries ({self.replays} replayed); cuts {dict(self.cuts)}; {self.lost} connections "
                f"lost; statuses {dict(self.statuses)}")


# --- the committed rows -------------------------------------------------------------------

def void_ranges(path):
    """The union of the record's ranges, clipped to size: sorted [start, end) stretches, and
    a Counter of their reasons. An unterminated last line is ignored (doc/format.md)."""
    rec = Path(f"{path}.void")
    if not rec.exists():
        return [], collections.Counter()
    raw = rec.read_bytes()
    ranges, reasons = [], collections.Counter()
    for i, line in enumerate(raw.split(b"\n")[:-1], 1):
        m = re.fullmatch(rb"(\d+) (\d+) ([A-Za-z]{1,15})", line)
        assert m and int(m[1]) < int(m[2]), f"{rec}:{i}: {line!r}"
        ranges.append((int(m[1]), int(m[2])))
        reasons[m[3].decode()] += 1
    merged = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged, reasons


def committed_rows(path):
    """(rows, void bytes, reasons) of a day file: the file read first, then its record; the
    bytes outside the ranges parsed as CSV, quote parity restarting at each range's end."""
    data = path.read_bytes()
    ranges, reasons = void_ranges(path)
    rows, at, void = [], 0, 0
    for a, b in ranges + [[len(data), len(data)]]:
        a, b = min(a, len(data)), min(b, len(data))
        if a > at:
            rows += csv.reader(io.StringIO(data[at:a].decode("utf-8"), newline=""), strict=True)
        void += max(0, b - max(a, at))
        at = max(at, b)
    return rows, void, reasons


def committed_verdict(out_dir, plan, columns, label):
    """(summary, what is wrong or None): whether the committed rows of every day file in
    out_dir are ids 1..plan.total, each once, and scripts/ndingest-check finds nothing torn
    left unrecorded."""
    files = [p for p in sorted(out_dir.glob("*.csv")) if not p.name.endswith(".quarantine.csv")]
    if not files:
        return f"{label}: no day file in {out_dir}", "no day file"
    ids, bad, void, reasons, checks = collections.Counter(), [], 0, collections.Counter(), []
    for p in files:
        rows, v, why = committed_rows(p)
        void += v
        reasons += why
        for row in rows:
            if len(row) == columns and row[0].isdigit():
                ids[int(row[0])] += 1
            else:
                bad.append([cell[:60] for cell in row[:4]] + [f"({len(row)} cells)"])
        r = subprocess.run([sys.executable, str(CHECK), "--columns", str(columns), str(p)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode:
            checks.append(f"ndingest-check: {r.stdout[-1000:]} {r.stderr}")
    twice = {i: n for i, n in ids.items() if n > 1}
    missing = plan.total - sum(1 for i in ids if 1 <= i <= plan.total)
    extra = [i for i in ids if not 1 <= i <= plan.total]
    big = [(first, rows) for _, first, rows, b in plan.reqs if b]
    twice_big = sum(1 for i in twice if any(f <= i < f + n for f, n in big))
    summary = (f"{label}: {sum(ids.values())} committed rows of {plan.total} sent; "
               f"{len(twice)} ids more than once ({sum(twice.values()) - len(twice)} extra "
               f"rows; {twice_big} of those ids from large bodies), {missing} missing, "
               f"{len(extra)} unknown, {len(bad)} malformed; void {void} bytes "
               f"{dict(reasons)}")
    print(summary)
    wrong = (f"malformed rows {bad[:3]}" if bad else
             f"duplicated ids, e.g. {sorted(twice.items())[:8]}" if twice else
             "missing or unknown ids" if missing or extra else
             checks[0] if checks else None)
    return summary, wrong


def test_committed_rows_reader(tmp_path):
    """The oracle itself: ranges are dropped as a union (repeated, overlapping, touching, one
    past the file's end), quote parity restarts at a range's end, a cell's line feed stays
    in its row, an unterminated last line of the record is ignored."""
    p = tmp_path / "d.csv"
    rows = [b'1,"a\nb"\n', b"2,torn", b"\n", b'3,"x,""y"""\n', b'4,"half', b"\n", b"5,z\n",
            b'6,"tail']
    p.write_bytes(b"".join(rows))
    at = [0]
    for r in rows:
        at.append(at[-1] + len(r))
    # rows[1:3] void twice (the second overlapping), rows[4:6] void in two touching halves,
    # rows[7] (an unterminated tail) void past the file's end; a torn record line last
    Path(f"{p}.void").write_text(f"{at[1]} {at[3]} torn\n{at[2]} {at[3]} failed\n"
                                 f"{at[4]} {at[4] + 3} failed\n{at[4] + 3} {at[6]} torn\n"
                                 f"{at[7]} {at[8] + 9} torn\n{at[0]} {at[8]} to")
    got, void, reasons = committed_rows(p)
    assert got == [["1", "a\nb"], ["3", 'x,"y"'], ["5", "z"]]
    assert void == (at[3] - at[1]) + (at[6] - at[4]) + (at[8] - at[7])
    assert reasons == {"torn": 3, "failed": 2}


def assert_committed_exactly_once(out_dir, plan, columns, label):
    summary, wrong = committed_verdict(out_dir, plan, columns, label)
    assert wrong is None, f"{summary}; {wrong}"


def finish(clients, label):
    clients.join()
    print(f"{label}: {clients.summary()}")
    assert not clients.problems, f"{clients.summary()}; problems {clients.problems[:5]}"
    assert len(clients.acked) == len(clients.plan.reqs), \
        f"not every request acknowledged in {DEADLINE} s: {clients.summary()}"


# --- kill -9 of workers -------------------------------------------------------------------

def workers_of(s):
    deliv = delivery_pid(s)
    return [p for p in worker_pids(s.proc.pid) if p != deliv and alive(p)]


def worker_holding(s, client_port):
    """The worker whose descriptor is the server's end of the connection from client_port."""
    want = f"{s.port:04X}"
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[1].endswith(":" + want) and f[2].endswith(f":{client_port:04X}"):
                inode = f[9]
    if inode is None:
        return None
    for pid in workers_of(s):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
        except OSError:
            continue
    return None


def kill_workers(s, clients, kills, rng):
    """kill -9 of a worker `kills` times, spread over the run by progress: each time the
    worker that is reading a large body (paused half-way: its first batch written) when one
    comes within 2 s, else a random worker. Returns (kills, of them mid large body)."""
    done = aimed = 0
    for k in range(kills):
        target = (k + 1) * len(clients.plan.reqs) // (kills + 2)
        while clients.progress() < target and time.monotonic() < clients.deadline:
            time.sleep(0.01)
        pids = wait_for(lambda: len(workers_of(s)) == 2 and workers_of(s), 30, "two workers")
        victim, until = None, time.monotonic() + 2
        while victim is None and time.monotonic() < until:
            with clients.lock:
                ports = [p for p, t in clients.paused.items() if time.monotonic() - t > 0.01]
            for port in ports:
                victim = worker_holding(s, port)
                if victim:
                    break
            time.sleep(0.002)
        aimed += victim is not None
        victim = victim or rng.choice(pids)
        os.kill(victim, signal.SIGKILL)
        done += 1
        wait_for(lambda: not alive(victim), 10, "the killed worker to go")
    return done, aimed


# --- the runs ----------------------------------------------------------------------------

def classic(start_server, *extra, out_dir=None):
    return start_server("--workers", "2", "--utc", "--columns", "id,s", *extra, out_dir=out_dir)


def test_connections_cut_at_random_points(start_server):
    """Tries cut mid-headers, mid-body and after the body (before the response), by a FIN
    or a reset; each retried on a new connection."""
    s = classic(start_server)
    plan = Plan(SEED)
    c = Clients(s, plan, "/", SEED, cut_rate=0.08, big_cut_rate=0.5)
    finish(c, "cuts")
    assert all(c.cuts[k] for k in ("headers", "body", "response")), c.cuts
    assert_committed_exactly_once(s.out_dir, plan, 2, "cuts")


def test_workers_killed_under_load(start_server):
    """kill -9 of a worker six times under the load, most often the one reading a large
    body whose first batch is written; the cut requests are retried."""
    s = classic(start_server)
    plan = Plan(SEED + 1)
    c = Clients(s, plan, "/", SEED + 1)
    try:
        kills, aimed = kill_workers(s, c, 6, random.Random(SEED + 1))
    finally:
        finish(c, "kills")
    print(f"kills: {kills} kill -9, {aimed} of them of a worker mid large body")
    assert kills == 6 and c.lost, c.summary()
    assert_committed_exactly_once(s.out_dir, plan, 2, "kills")


@pytest.fixture
def disk(tmp_path):
    yield from mounted_tmpfs(tmp_path, "disk", "size=256m")


def test_disk_fills_then_space_is_freed(disk, start_server):
    """Three times under the load, a filler leaves the tmpfs almost no room: requests fail
    (500/507) until the filler is removed a moment later; the clients' retries then pass."""
    s = classic(start_server, "--min-free", "0", out_dir=disk)
    plan = Plan(SEED + 2)
    c = Clients(s, plan, "/", SEED + 2)
    rng = random.Random(SEED + 2)
    fills = 0
    try:
        for k in range(3):
            target = (k + 1) * len(plan.reqs) // 4
            while c.progress() < target and time.monotonic() < c.deadline:
                time.sleep(0.01)
            with c.lock:
                failed_before = c.statuses[500] + c.statuses[507]
            st = os.statvfs(disk)
            room = st.f_bavail * st.f_frsize - rng.randint(0, 256 * 1024)
            filler = disk / "filler"
            with open(filler, "wb") as f:
                try:
                    f.truncate(0)
                    while room > 0:
                        room -= f.write(b"\0" * min(room, 1 << 20))
                        f.flush()
                except OSError:
                    pass
            fills += 1
            # until the clients met the full disk a few times (or 5 s), then space again
            until = time.monotonic() + 5
            while time.monotonic() < until:
                with c.lock:
                    if c.statuses[500] + c.statuses[507] >= failed_before + 5:
                        break
                time.sleep(0.01)
            time.sleep(0.2)
            filler.unlink()
    finally:
        finish(c, "disk")
    failures = c.statuses[500] + c.statuses[507]
    print(f"disk: {fills} fills, {failures} requests refused for want of space")
    assert fills == 3 and failures >= 3, c.summary()
    assert "No space left on device" in s.stderr()
    assert_committed_exactly_once(s.out_dir, plan, 2, "disk")


def test_into_postgresql_with_cuts_and_kills(postgres, db, start_server, tmp_path):  # noqa: F811
    """Delivery on, into PostgreSQL; the keyed requests go to /v0/events?wait=true while tries
    are cut and workers killed: the table holds each id exactly once, as do the committed
    rows."""
    postgres.psql(TABLE, db=db)
    d = tmp_path / "datasets"
    d.mkdir()
    (d / "events.datasource").write_text(EVENTS)
    s = start_server("--workers", "2", "--utc", "--datasets", str(d), "--deliver",
                     postgres.url(db=db), "--deliver-interval", "100")
    plan = Plan(SEED + 3)
    c = Clients(s, plan, "/v0/events?name=events&wait=true", SEED + 3, cut_rate=0.04,
                big_cut_rate=0.4)
    try:
        kills, aimed = kill_workers(s, c, 3, random.Random(SEED + 3))
    finally:
        finish(c, "postgresql")
    print(f"postgresql: {kills} kill -9, {aimed} of them of a worker mid large body")
    summary, wrong = committed_verdict(s.out_dir, plan, 4, "postgresql, day file")
    wait_caught_up(s, "events", plan.total, 180)
    total, distinct = (int(v) for v in postgres.psql("SELECT count(*), count(DISTINCT id) "
                                                    "FROM events", db=db)[0])
    print(f"postgresql: table {total} rows, {distinct} distinct ids, {plan.total} sent")
    assert_exactly_once(postgres, db, set(range(1, plan.total + 1)))
    assert wrong is None, f"{summary}; {wrong}"
