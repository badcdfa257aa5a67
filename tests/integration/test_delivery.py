"""test_delivery.py -- serve --deliver into real ClickHouse 18.16 servers (a two-shard cluster
with ZooKeeper, tests/integration/clickhouse.py): every acknowledged row reaches the table
once, counted by a unique id per row, whatever is killed, stopped or refused on the way
(doc/delivery.md)."""
import csv
import http.client
import io
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import today, wait_for, worker_pids, alive

EVENTS = """SCHEMA >
    `id` UInt64 `json:$.id`,
    `host` String `json:$.host`,
    `n` Int32 `json:$.n`,
    `s` String `json:$.s`
"""
COLUMNS = "(`id` UInt64, `host` String, `n` Int32, `s` String)"
# Text with everything CSV must quote: a comma, quotes, a line feed inside a cell.
TEXTS = ["plain", "a,b", 'say "hi"', "two\nlines", "", "x" * 300, "ünï €"]


def replicated(db, table, extra=""):
    return (f"CREATE TABLE {db}.{table} {COLUMNS} ENGINE = ReplicatedMergeTree("
            f"'/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}') ORDER BY id {extra}")


class Ids:
    """Ids handed out to clients, and those acknowledged (a 2xx) — thread-safe."""

    def __init__(self, start=1):
        self.next, self.acked, self.lock = start, set(), threading.Lock()

    def take(self, n):
        with self.lock:
            first = self.next
            self.next += n
            return range(first, first + n)

    def ack(self, ids):
        with self.lock:
            self.acked.update(ids)


def lines_for(ids, host="h"):
    return b"".join(json.dumps({"id": i, "host": host, "n": i % 1000 - 500,
                                "s": TEXTS[i % len(TEXTS)]}).encode() + b"\n" for i in ids)


def post(server, name, ids, host="h", timeout=60):
    status, _, body = server.request("POST", f"/v0/events?name={name}&wait=true",
                                     lines_for(ids, host), timeout=timeout)
    return status, body


class Load:
    """clients threads posting batches of rows to the dataset until stop() (or max_requests
    each, or seconds), recording the ids of every 2xx."""

    def __init__(self, server, name, ids, clients=8, rows=50, seconds=120, max_requests=100000):
        self.stop_at = time.monotonic() + seconds
        self.halt = threading.Event()
        self.statuses = {}
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(server, name, ids, rows,
                                                                 max_requests), daemon=True)
                        for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, server, name, ids, rows, max_requests):
        conn = None  # one keep-alive connection per client, made again after an error
        for _ in range(max_requests):
            if self.halt.is_set() or time.monotonic() > self.stop_at:
                break
            batch = ids.take(rows)
            try:
                if conn is None:
                    conn = server.connection(timeout=30)
                conn.request("POST", f"/v0/events?name={name}&wait=true", lines_for(batch))
                r = conn.getresponse()
                r.read()
                status = r.status
                if r.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
                continue
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                ids.ack(batch)
                time.sleep(0.01)  # a steady load, not a flood: delivery of 4 KiB batches keeps up
            else:
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join(60)


def delivery_pid(server):
    """The delivery process: the main process's child named ndingest-deliv."""
    for pid in worker_pids(server.proc.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "ndingest-deliv" and alive(pid):
                return pid
        except OSError:
            pass
    return None


def kill_delivery(server, times, rng, low, high):
    """kill -9 of the delivery process `times` times, each a random low..high s after it is
    (again) running; returns how many kills were made."""
    for _ in range(times):
        pid = wait_for(lambda: delivery_pid(server), 30, "the delivery process")
        time.sleep(rng.uniform(low, high))
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 10, "the killed process to go")
    return times


def metrics(server):
    for attempt in range(5):  # a connection refused or reset under load is tried again
        try:
            status, _, body = server.request("GET", "/metrics")
            break
        except OSError:
            if attempt == 4:
                raise
            time.sleep(0.2)
    assert status == 200
    return body.decode()


def metric(server, name, labels=""):
    prefix = name + ("{" + labels + "}" if labels else "")
    for line in metrics(server).splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return None


def db_ids(ch, table):
    return [int(x) for x in ch.query(f"SELECT id FROM {table} FORMAT TSV").split()]


def assert_exactly_once(ch, table, acked, unacked_ok=()):
    """Every acknowledged id once; nothing twice; nothing that was never sent (a torn row
    would have a broken id); ids of requests that got no 2xx only from unacked_ok."""
    ids = db_ids(ch, table)
    seen = set(ids)
    assert len(ids) == len(seen), f"{len(ids) - len(seen)} duplicated rows"
    missing = acked - seen
    assert not missing, f"{len(missing)} acknowledged rows missing, e.g. {sorted(missing)[:5]}"
    extra = seen - acked - set(unacked_ok)
    assert not extra, f"{len(extra)} rows never sent or never acknowledged: {sorted(extra)[:5]}"


def wait_delivered(ch, table, want, timeout=120):
    def done():
        try:
            return int(ch.query(f"SELECT count(DISTINCT id) FROM {table}")) >= want
        except Exception:
            return False
    wait_for(done, timeout, f"{want} rows in {table}")


def wait_caught_up(server, name, rows, timeout=120):
    """Until delivery has stored or quarantined at least `rows` rows of the dataset and
    nothing more waits (the lag alone could read 0 before delivery saw the last rows)."""
    label = f'dataset="{name}"'

    def done():
        handled = (metric(server, "ndingest_delivery_rows_total", label) or 0) + \
            (metric(server, "ndingest_delivery_quarantined_total", label) or 0)
        return handled >= rows and metric(server, "ndingest_delivery_lag_bytes", label) == 0
    wait_for(done, timeout, f"{name}'s delivery to catch up")


@pytest.fixture(scope="module")
def cluster(clickhouse_cluster):
    return clickhouse_cluster


@pytest.fixture
def db(cluster, request):
    """A database of the test's own on every shard."""
    name = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40]
    for s in cluster.servers:
        s.query(f"DROP DATABASE IF EXISTS {name}")
        s.query(f"CREATE DATABASE {name}")
    yield name
    for s in cluster.servers:  # a test that failed with a server down leaves it up again
        if s.proc.poll() is not None:
            restart_clickhouse(s, kill=False)


def datasets_dir(tmp_path, names, text=EVENTS):
    d = tmp_path / "datasets"
    d.mkdir(exist_ok=True)
    for n in names:
        (d / f"{n}.datasource").write_text(text)
    return d


def deliver_url(cluster, db, shards=1, suffix=""):
    hosts = ",".join(f"127.0.0.1:{s.http_port}" for s in cluster.servers[:shards])
    return f"clickhouse://{hosts}/{db}" + (f"?table_suffix={suffix}" if suffix else "")


def start_delivering(start_server, tmp_path, cluster, db, names, *extra, shards=1, env=None,
                     out_dir=None):
    d = datasets_dir(tmp_path, names)
    return start_server("--workers", "2", "--datasets", str(d), "--deliver",
                        deliver_url(cluster, db, shards), "--deliver-interval", "100",
                        "--deliver-retry-max", "2", *extra, env=env, out_dir=out_dir)


def test_delivers_acknowledged_rows(cluster, db, start_server, tmp_path):
    ch = cluster.servers[0]
    ch.query(replicated(db, "events"))
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"])
    ids = Ids()
    for _ in range(5):
        batch = ids.take(300)
        assert post(s, "events", batch)[0] == 200
        ids.ack(batch)
    wait_delivered(ch, f"{db}.events", len(ids.acked))
    assert_exactly_once(ch, f"{db}.events", ids.acked)
    # the values, not only the ids, arrive as sent (quoted cells, line feeds, UTF-8)
    rows = ch.rows(f"SELECT id, host, n, s FROM {db}.events ORDER BY id LIMIT 20")
    for r in rows:
        i = int(r["id"])
        assert (r["host"], r["n"], r["s"]) == ("h", i % 1000 - 500, TEXTS[i % len(TEXTS)])
    wait_caught_up(s, "events", len(ids.acked))
    assert metric(s, "ndingest_delivery_rows_total", 'dataset="events"') == len(ids.acked)
    assert metric(s, "ndingest_delivery_mode", 'mode="checksum"') == 1
    assert metric(s, "ndingest_delivery_lag_seconds", 'dataset="events"') == 0
    cursor = (s.out_dir / ".delivery" / f"clickhouse-{db}" / "events.cursor").read_text()
    day = f"events-{today()}.csv"
    assert f"file {day}\n" in cursor
    assert f"offset {(s.out_dir / day).stat().st_size}\n" in cursor
    assert "batch" not in cursor


def test_kill_delivery_at_random_points(cluster, db, start_server, tmp_path):
    """kill -9 of the delivery process at 24 random moments under load: with a replicated
    table every acknowledged row is there once (a resent batch is the same block)."""
    ch = cluster.servers[0]
    ch.query(replicated(db, "events"))
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"],
                         "--deliver-batch", "4K", "--deliver-interval", "20")
    ids = Ids()
    load = Load(s, "events", ids, clients=4, rows=20, seconds=90)
    rng = random.Random(int(os.environ.get("NDINGEST_SEED", "16")))
    try:
        kills = kill_delivery(s, 24, rng, 0.02, 0.4)
    finally:
        load.stop()
    assert not load.errors, load.errors[:3]
    restarts = metric(s, "ndingest_delivery_restarts_total")
    assert restarts >= kills, (restarts, kills)
    wait_caught_up(s, "events", len(ids.acked), 180)
    assert_exactly_once(ch, f"{db}.events", ids.acked)
    assert len(ids.acked) > 1000, len(ids.acked)


def test_plain_mergetree_duplicates_at_most_a_batch_per_kill(cluster, db, start_server,
                                                              tmp_path):
    """Into a plain MergeTree 18.16 cannot deduplicate: at least once, and each kill of the
    delivery process duplicates at most the batch it had in flight."""
    ch = cluster.servers[0]
    ch.query(f"CREATE TABLE {db}.events {COLUMNS} ENGINE = MergeTree ORDER BY id")
    rows_per_request = 20
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"],
                         "--deliver-batch", "4K", "--deliver-interval", "20")
    ids = Ids()
    load = Load(s, "events", ids, clients=4, rows=rows_per_request, seconds=60)
    try:
        kills = kill_delivery(s, 10, random.Random(), 0.05, 0.3)
    finally:
        load.stop()
    wait_caught_up(s, "events", len(ids.acked), 180)
    all_ids = db_ids(ch, f"{db}.events")
    assert set(all_ids) == ids.acked
    duplicated = len(all_ids) - len(set(all_ids))
    # A 4K batch holds at most 4096 / (the shortest row) rows: ~25 bytes.
    assert duplicated <= kills * (4096 // 25), (duplicated, kills)
    print(f"plain MergeTree: {kills} kills, {duplicated} duplicated rows of {len(all_ids)}")


def restart_clickhouse(ch, kill=True, down_seconds=0.0):
    """kill -9 (or stop) the server and start it again on the same ports with its data."""
    import clickhouse as chmod
    if kill:
        ch.proc.kill()
        ch.proc.wait()
    else:
        ch.stop(remove=False)
    if not ch._stdout.closed:
        ch._stdout.close()
    time.sleep(down_seconds)
    ch._start(120)
    if hasattr(chmod, "Cluster"):
        wait_for(lambda: _reads_zookeeper(ch), 120, "ClickHouse to reach ZooKeeper again")


def _reads_zookeeper(ch):
    try:
        ch.query("SELECT count() FROM system.zookeeper WHERE path = '/'", timeout=10)
        return True
    except Exception:
        return False


def test_clickhouse_killed_and_restarted_during_batches(cluster, db, start_server, tmp_path):
    ch = cluster.servers[0]
    ch.query(replicated(db, "events"))
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"],
                         "--deliver-batch", "8K", "--deliver-interval", "20")
    ids = Ids()
    load = Load(s, "events", ids, clients=4, rows=20, seconds=120)
    try:
        for _ in range(3):
            wait_for(lambda: metric(s, "ndingest_delivery_batches_total",
                                    'dataset="events",result="stored"'), 60, "a stored batch")
            time.sleep(random.uniform(0.1, 0.5))
            restart_clickhouse(ch, kill=True, down_seconds=1)
    finally:
        load.stop()
    wait_caught_up(s, "events", len(ids.acked), 180)
    assert_exactly_once(ch, f"{db}.events", ids.acked)
    assert metric(s, "ndingest_delivery_retries_total", 'dataset="events"') > 0


def test_clickhouse_down_for_a_minute_under_load(cluster, db, start_server, tmp_path):
    """60 s without ClickHouse while 8 clients keep posting: the files buffer, nothing is
    lost, and delivery catches up once it is back."""
    ch = cluster.servers[0]
    ch.query(replicated(db, "events"))
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"])
    ids = Ids()
    load = Load(s, "events", ids, clients=8, rows=50, seconds=150)
    try:
        time.sleep(2)
        ch.stop(remove=False)
        down = time.monotonic()
        time.sleep(5)
        lag = metric(s, "ndingest_delivery_lag_bytes", 'dataset="events"')
        assert lag > 0
        while time.monotonic() - down < 60:
            time.sleep(1)
        acked_while_down = len(ids.acked)
        restart_clickhouse(ch, kill=False)
        time.sleep(3)
    finally:
        load.stop()
    assert load.statuses.get(200, 0) > 0 and acked_while_down > 0
    wait_caught_up(s, "events", len(ids.acked), 240)
    assert_exactly_once(ch, f"{db}.events", ids.acked)


def test_refused_rows_go_to_the_quarantine(cluster, db, start_server, tmp_path):
    """An Enum8 column refuses a value it does not list (Code 49 on 18.16): those rows go to
    the dataset's quarantine with ClickHouse's error, and the rest of their batch arrives."""
    ch = cluster.servers[0]
    ch.query(f"CREATE TABLE {db}.events (`id` UInt64, `host` Enum8('h' = 1, 'k' = 2), "
             f"`n` Int32, `s` String) ENGINE = ReplicatedMergeTree("
             f"'/clickhouse/tables/{{shard}}/{db}/events', '{{replica}}') ORDER BY id")
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"],
                         "--deliver-interval", "500")
    good, bad = list(range(1, 301)), [17, 150, 299]
    body = b"".join(json.dumps({"id": i, "host": "zz" if i in bad else "h", "n": 1,
                                "s": "x"}).encode() + b"\n" for i in good)
    assert s.request("POST", "/v0/events?name=events&wait=true", body)[0] == 200
    wait_caught_up(s, "events", len(good), 120)
    assert sorted(db_ids(ch, f"{db}.events")) == [i for i in good if i not in bad], s.stderr()
    q = list(csv.reader(io.StringIO((s.out_dir / f"events-{today()}.quarantine.csv").read_text(),
                                    newline="")))
    assert sorted(int(r[3].split(",")[0]) for r in q) == bad
    for r in q:
        assert r[3].split(",")[1] == '"zz"'
        assert "database: " in r[2] and "Code: 49" in r[2] and "Unknown element" in r[2]
    assert metric(s, "ndingest_delivery_quarantined_total", 'dataset="events"') == len(bad)


def test_sighup_adds_and_removes_datasets(cluster, db, start_server, tmp_path):
    ch = cluster.servers[0]
    for t in ("a", "b"):
        ch.query(replicated(db, t))
    s = start_delivering(start_server, tmp_path, cluster, db, ["a"])
    assert post(s, "a", range(1, 101))[0] == 200
    wait_delivered(ch, f"{db}.a", 100)
    # b appears
    datasets_dir(tmp_path, ["b"])
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: s.request("POST", "/v0/events?name=b&wait=true",
                               lines_for(range(1000, 1050)))[0] == 200, 30, "b to be served")
    wait_delivered(ch, f"{db}.b", 50)
    # a goes: rows written before are still delivered
    ch.stop(remove=False)
    assert post(s, "a", range(101, 201))[0] == 200
    (tmp_path / "datasets" / "a.datasource").unlink()
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: s.request("POST", "/v0/events?name=a&wait=true", b"")[0] == 404, 30,
             "a to be gone")
    restart_clickhouse(ch, kill=False)
    wait_delivered(ch, f"{db}.a", 200)
    assert_exactly_once(ch, f"{db}.a", set(range(1, 201)))
    assert_exactly_once(ch, f"{db}.b", set(range(1000, 1050)))


FAKETIME_LIB = next(iter(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")), None)


@pytest.mark.skipif(FAKETIME_LIB is None, reason="libfaketime is not installed "
                    "(scripts/install-deps.sh installs faketime)")
def test_midnight_finishes_yesterdays_file(cluster, db, start_server, tmp_path):
    """The server's clock starts 5 s before midnight (libfaketime), with ClickHouse down:
    rows go to one day's file, then to the next; once ClickHouse is back, delivery finishes
    yesterday's file (--deliver-grace 1) and goes on with today's: every row once."""
    ch = cluster.servers[0]
    ch.query(replicated(db, "events"))
    ch.stop(remove=False)
    env = dict(os.environ, LD_PRELOAD=str(FAKETIME_LIB), FAKETIME="@2026-12-07 23:59:55",
               FAKETIME_DONT_RESET="1", FAKETIME_NO_CACHE="1")
    # Under ASan (make asan) libfaketime is loaded before the sanitizer's runtime, which it
    # refuses unless told that the order is intended.
    env["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                 "verify_asan_link_order=0"]))
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"], "--utc",
                         "--deliver-grace", "1", env=env)
    acked = set(range(1, 101))
    assert post(s, "events", acked)[0] == 200
    tomorrow = s.out_dir / "events-2026-12-08.csv"
    n = 10000
    while not tomorrow.exists():
        assert n < 10100, "no row reached the next day's file"
        assert post(s, "events", [n])[0] == 200
        acked.add(n)
        n += 1
        time.sleep(0.2)
    assert (s.out_dir / "events-2026-12-07.csv").stat().st_size > 0
    assert post(s, "events", range(201, 301))[0] == 200
    acked |= set(range(201, 301))
    restart_clickhouse(ch, kill=False)
    wait_delivered(ch, f"{db}.events", len(acked))
    assert_exactly_once(ch, f"{db}.events", acked)
    cursor = (s.out_dir / ".delivery" / f"clickhouse-{db}" / "events.cursor").read_text()
    assert "file events-2026-12-08.csv\n" in cursor


def test_backpressure_on_lag(cluster, db, start_server, tmp_path):
    """Past --deliver-max-lag new bodies get 503 with Retry-After and nothing is written;
    once delivery catches up, ingest resumes by itself."""
    ch = cluster.servers[0]
    ch.query(replicated(db, "events"))
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"],
                         "--deliver-max-lag", "2K")
    ch.stop(remove=False)
    assert post(s, "events", range(1, 101))[0] == 200  # ~5 KB: past the bound
    day = s.out_dir / f"events-{today()}.csv"

    acked = set(range(1, 101))
    fresh = iter(range(500, 100000, 10))

    def refused():
        batch = range(next(fresh), 0)
        batch = range(batch.start, batch.start + 10)
        status, headers, body = s.request("POST", "/v0/events?name=events&wait=true",
                                          lines_for(batch))
        if status == 200:
            acked.update(batch)
        return (status, headers) if status == 503 else None
    status, headers = wait_for(refused, 30, "a 503")
    assert headers.get("Retry-After") == "2"
    time.sleep(1.2)  # each worker judges once a second: by now both refuse
    size = day.stat().st_size
    for _ in range(5):
        assert refused()
    assert day.stat().st_size == size, "a refused body wrote rows"
    assert metric(s, "ndingest_backpressure", 'reason="lag"') == 1
    restart_clickhouse(ch, kill=False)
    wait_for(lambda: refused() is None, 60, "ingest to resume")
    wait_caught_up(s, "events", len(acked), 60)
    assert_exactly_once(ch, f"{db}.events", acked)
    assert metric(s, "ndingest_backpressure_transitions_total") >= 2
    assert s.stderr().count("refusing new bodies with 503") == 1


def test_two_hosts_into_two_shards(cluster, db, start_server, tmp_path):
    """Two ndingest hosts (own out dirs, own host ids) deliver into both shards' local
    tables; the Distributed table holds the sum of both hosts' acknowledged rows, once."""
    for s in cluster.servers:
        s.query(replicated(db, "events_local"))
        s.query(f"CREATE TABLE {db}.events {COLUMNS} ENGINE = Distributed("
                f"{cluster.name}, {db}, events_local, rand())")
    d = datasets_dir(tmp_path, ["events"])
    url = deliver_url(cluster, db, shards=2, suffix="_local")
    hosts = [start_server("--workers", "2", "--datasets", str(d), "--deliver", url,
                          "--deliver-batch", "8K", "--deliver-interval", "50",
                          "--host-id", f"host{i}") for i in (1, 2)]
    ids = Ids()
    loads = [Load(h, "events", ids, clients=4, rows=25, seconds=15) for h in hosts]
    for load in loads:
        load.stop()
    # each host's share is unknown here: the database's count decides (wait_delivered)
    ch = cluster.servers[0]
    wait_delivered(ch, f"{db}.events", len(ids.acked))
    assert_exactly_once(ch, f"{db}.events", ids.acked)
    per_shard = [int(s.query(f"SELECT count() FROM {db}.events_local")) for s in cluster.servers]
    assert all(per_shard) and sum(per_shard) == len(ids.acked), per_shard


def test_narrow_table_waits_while_others_flow(cluster, db, start_server, tmp_path):
    """A table narrower than its definition (Int8 for Int32: 18.16 would wrap 1000 to -24,
    silently) is not delivered into: its dataset waits, said in the log and the metric,
    while another dataset flows; once the table is widened, a SIGHUP delivers its rows."""
    ch = cluster.servers[0]
    ch.query(replicated(db, "other"))
    ch.query(f"CREATE TABLE {db}.narrow (`id` UInt64, `host` String, `n` Int8, `s` String) "
             f"ENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{db}/narrow', "
             f"'{{replica}}') ORDER BY id")
    s = start_delivering(start_server, tmp_path, cluster, db, ["narrow", "other"])
    assert post(s, "narrow", range(1, 201))[0] == 200
    assert post(s, "other", range(1, 201))[0] == 200
    wait_delivered(ch, f"{db}.other", 200)
    wait_for(lambda: metric(s, "ndingest_delivery_waiting", 'dataset="narrow"') == 1, 30,
             "narrow to wait")
    assert "narrow" in s.stderr() and "Int8" in s.stderr()
    time.sleep(1)
    assert int(ch.query(f"SELECT count() FROM {db}.narrow")) == 0, "rows loaded into a narrow table"
    ch.query(f"ALTER TABLE {db}.narrow MODIFY COLUMN `n` Int32")
    s.proc.send_signal(signal.SIGHUP)
    wait_delivered(ch, f"{db}.narrow", 200)
    assert_exactly_once(ch, f"{db}.narrow", set(range(1, 201)))
    rows = ch.rows(f"SELECT id, n FROM {db}.narrow WHERE id = 999 OR id = 150")
    assert [(int(r["id"]), r["n"]) for r in rows] == [(150, 150 % 1000 - 500)]
    assert metric(s, "ndingest_delivery_waiting", 'dataset="narrow"') == 0


def test_worker_killed_mid_write_while_delivering(cluster, db, start_server, tmp_path):
    """Workers killed (-9) under load with large bodies (1 MiB writes) while delivery runs:
    whatever a killed write left (a torn row is recorded in the .void record by the next
    writer) never reaches the table as a row; every acknowledged row arrives once, and the
    only others are rows of requests that got no answer (at least once for those)."""
    ch = cluster.servers[0]
    ch.query(replicated(db, "events"))
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"])
    ids = Ids()
    load = Load(s, "events", ids, clients=4, rows=6000, seconds=60)  # ~2 MB bodies
    kills = 0
    try:
        for _ in range(6):
            time.sleep(random.uniform(0.3, 1.5))
            workers = [p for p in worker_pids(s.proc.pid) if p != delivery_pid(s)]
            if workers:
                os.kill(random.choice(workers), signal.SIGKILL)
                kills += 1
    finally:
        load.stop()
    assert kills
    sent = set(range(1, ids.next))
    wait_for(lambda: len(worker_pids(s.proc.pid)) >= 3, 30, "the workers to be replaced")
    assert post(s, "events", [10**9])[0] == 200  # a write after the kills isolates any torn tail
    ids.ack([10**9])
    wait_delivered(ch, f"{db}.events", len(ids.acked))
    wait_for(lambda: metric(s, "ndingest_delivery_lag_bytes", 'dataset="events"') == 0, 60,
             "delivery to reach the end of the file")
    assert_exactly_once(ch, f"{db}.events", ids.acked, unacked_ok=sent - ids.acked)
    assert not (s.out_dir / f"events-{today()}.quarantine.csv").exists(), \
        "a torn row reached ClickHouse and was refused"
    day = s.out_dir / f"events-{today()}.csv"
    check = subprocess.run([str(Path(__file__).parents[2] / "scripts" / "ndingest-check"),
                            "--columns", "4", str(day)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    print(f"{kills} workers killed; {check.stdout.strip()}")


def test_deliver_create_makes_the_missing_table(cluster, db, start_server, tmp_path):
    """--deliver-create: a dataset whose table is missing gets it, as `ndingest schema
    --clickhouse --database DB` prints it, and its rows arrive; without the option it waits."""
    ch = cluster.servers[0]
    s = start_delivering(start_server, tmp_path, cluster, db, ["events"], "--deliver-create")
    assert post(s, "events", range(1, 51))[0] == 200
    wait_delivered(ch, f"{db}.events", 50)
    assert_exactly_once(ch, f"{db}.events", set(range(1, 51)))
    tables = ch.query(f"SHOW TABLES FROM {db}").split()
    assert "events" in tables and "events_quarantine" in tables, tables
    cols = ch.rows(f"DESCRIBE TABLE {db}.events")
    assert [(c["name"], c["type"]) for c in cols] == [
        ("id", "UInt64"), ("host", "String"), ("n", "Int32"), ("s", "String")]


def test_classic_dataset_into_the_table_named_by_name(cluster, db, start_server, tmp_path,
                                                      taxi_body):
    """POST / (no --datasets) delivers to the table named by --name, its --columns as text:
    the table holds the day file's rows, cell for cell."""
    ch = cluster.servers[0]
    ch.query(f"CREATE TABLE {db}.taxi (`vendorid` String, `tpep_pickup_datetime` String, "
             f"`trip_distance` String, `total_amount` String) ENGINE = ReplicatedMergeTree("
             f"'/clickhouse/tables/{{shard}}/{db}/taxi', '{{replica}}') ORDER BY tuple()")
    s = start_server("--workers", "2", "--name", "taxi", "--deliver", deliver_url(cluster, db),
                     "--deliver-interval", "100")
    for _ in range(3):
        assert s.post(taxi_body)[0] == 200
    day = (s.out_dir / f"taxi-{today()}.csv").read_bytes()
    want = sorted(tuple(r) for r in csv.reader(io.StringIO(day.decode(), newline="")))
    wait_for(lambda: int(ch.query(f"SELECT count() FROM {db}.taxi")) >= len(want), 60,
             "the rows in ClickHouse")
    got = sorted(tuple(r) for r in csv.reader(io.StringIO(
        ch.query(f"SELECT * FROM {db}.taxi FORMAT CSV"), newline="")))
    assert len(want) == 4800 and got == want
