"""test_delivery_postgres.py -- serve --deliver postgresql://... (and `ndingest deliver`) into a
real PostgreSQL 15 (tests/integration/postgres.py): every acknowledged row reaches the table
once, counted by a unique id per row (count(*) = count(DISTINCT id) = acknowledged), whatever
is killed, stopped, terminated or refused on the way (doc/delivery.md, "PostgreSQL")."""
import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BINARY, alive, today, wait_for, worker_pids
from postgres import PASSWORD
from test_delivery import (EVENTS, TEXTS, Ids, Load, delivery_pid, lines_for, metric, post,
                           wait_caught_up)

TABLE = ('CREATE TABLE events (id numeric(20,0) NOT NULL, host text NOT NULL, '
         'n integer NOT NULL, s text NOT NULL)')
# The test-only pause between COPY and COMMIT (src/delivery/deliver.c, doc/delivery.md).
PAUSE_ENV = "NDINGEST_TEST_PG_PAUSE_BEFORE_COMMIT"


@pytest.fixture
def db(postgres, request):
    """A database of the test's own (its own cursor table too), owned by ingest."""
    name = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40]
    postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", db="postgres")
    postgres.psql(f"CREATE DATABASE {name}", db="postgres")
    yield name
    if not _up(postgres):  # a test that failed with the server down leaves it up again
        postgres.start()


def _up(pg):
    try:
        pg.scalar("SELECT 1", db="postgres")
        return True
    except Exception:
        return False


def datasets_dir(tmp_path, names, text=EVENTS):
    d = tmp_path / "datasets"
    d.mkdir(exist_ok=True)
    for n in names:
        (d / f"{n}.datasource").write_text(text)
    return d


def start_delivering(start_server, tmp_path, pg, db, names, *extra, env=None, out_dir=None):
    d = datasets_dir(tmp_path, names)
    return start_server("--workers", "2", "--datasets", str(d), "--deliver", pg.url(db=db),
                        "--deliver-interval", "100", "--deliver-retry-max", "2", *extra,
                        env=env, out_dir=out_dir)


def counts(pg, db, table="events"):
    """(count(*), count(DISTINCT id)) of the table."""
    r = pg.psql(f"SELECT count(*), count(DISTINCT id) FROM {table}", db=db)[0]
    return int(r[0]), int(r[1])


def ids_in(pg, db, table="events"):
    return {int(r[0]) for r in pg.psql(f"SELECT id FROM {table}", db=db)}


def assert_exactly_once(pg, db, acked, table="events"):
    """count(*) = count(DISTINCT id) = the acknowledged rows, and the ids are those."""
    total, distinct = counts(pg, db, table)
    assert total == distinct, f"{total - distinct} duplicated rows"
    seen = ids_in(pg, db, table)
    missing = acked - seen
    assert not missing, f"{len(missing)} acknowledged rows missing, e.g. {sorted(missing)[:5]}"
    extra = seen - acked
    assert not extra, f"{len(extra)} rows never acknowledged: {sorted(extra)[:5]}"
    assert total == len(acked)


def wait_delivered(pg, db, want, table="events", timeout=120):
    def done():
        try:
            return counts(pg, db, table)[1] >= want
        except Exception:
            return False
    wait_for(done, timeout, f"{want} rows in {table}")


def cursor_row(pg, db, host, dataset="events"):
    r = pg.psql(f"SELECT file, \"offset\" FROM ndingest_delivery WHERE host = '{host}' AND "
                f"dataset = '{dataset}'", db=db)
    return (r[0][0], int(r[0][1])) if r else None


def test_delivers_acknowledged_rows(postgres, db, start_server, tmp_path):
    postgres.psql(TABLE, db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"], "--host-id", "h1")
    ids = Ids()
    for _ in range(5):
        batch = ids.take(300)
        assert post(s, "events", batch)[0] == 200
        ids.ack(batch)
    wait_delivered(postgres, db, len(ids.acked))
    assert_exactly_once(postgres, db, ids.acked)
    # the values arrive as sent (quoted cells, line feeds, UTF-8)
    for r in postgres.query("SELECT id, host, n, s FROM events ORDER BY id LIMIT 20", db=db):
        i = int(r["id"])
        assert (r["host"], int(r["n"]), r["s"]) == ("h", i % 1000 - 500, TEXTS[i % len(TEXTS)])
    wait_caught_up(s, "events", len(ids.acked))
    assert metric(s, "ndingest_delivery_rows_total", 'dataset="events"') == len(ids.acked)
    assert metric(s, "ndingest_delivery_mode", 'mode="transaction"') == 1
    assert metric(s, "ndingest_delivery_lag_seconds", 'dataset="events"') == 0
    day = f"events-{today()}.csv"
    # the database's cursor row and the local hint agree: the file's end
    assert cursor_row(postgres, db, "h1") == (day, (s.out_dir / day).stat().st_size)
    local = next((s.out_dir / ".delivery").glob("postgresql-*")) / "events.cursor"
    assert f"offset {(s.out_dir / day).stat().st_size}\n" in local.read_text()
    assert "exactly once by one transaction" in s.stderr()


def test_classic_untyped_dataset_into_text_columns(postgres, db, start_server):
    """POST / with --columns: the rows go to the table named by --name, all text."""
    postgres.psql("CREATE TABLE classic (a text, b text, c text)", db=db)
    s = start_server("--workers", "2", "--name", "classic", "--columns", "a,b,c",
                     "--deliver", postgres.url(db=db), "--deliver-interval", "100")
    body = b"".join(json.dumps({"a": f"x{i}", "b": TEXTS[i % len(TEXTS)], "c": i}).encode() +
                    b"\n" for i in range(200))
    assert s.post(body)[0] == 200
    wait_for(lambda: postgres.scalar("SELECT count(*) FROM classic", db=db) == "200", 60,
             "200 rows in classic")
    rows = {r["a"]: r for r in postgres.query("SELECT a, b, c FROM classic", db=db)}
    for i in range(200):
        assert rows[f"x{i}"]["b"] == TEXTS[i % len(TEXTS)]
        assert rows[f"x{i}"]["c"] == str(i)


def test_missing_table_waits_then_sighup(postgres, db, start_server, tmp_path):
    """No table: the dataset waits (logged, ndingest_delivery_waiting 1); once it is made,
    SIGHUP delivers its rows."""
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"])
    assert post(s, "events", range(1, 101))[0] == 200
    wait_for(lambda: metric(s, "ndingest_delivery_waiting", 'dataset="events"') == 1, 30,
             "the dataset to wait")
    assert "the dataset waits until the table is fixed" in s.stderr()
    postgres.psql(TABLE, db=db)
    s.proc.send_signal(signal.SIGHUP)
    wait_delivered(postgres, db, 100)
    assert_exactly_once(postgres, db, set(range(1, 101)))


def kill_delivery_repeatedly(s, kills, rng, lo=0.02, hi=0.4):
    done = 0
    while done < kills:
        pid = wait_for(lambda: delivery_pid(s), 30, "the delivery process")
        time.sleep(rng.uniform(lo, hi))
        os.kill(pid, signal.SIGKILL)
        done += 1
        wait_for(lambda: not alive(pid), 10, "the killed process to go")
    return done


def test_kill_delivery_at_random_points(postgres, db, start_server, tmp_path):
    """kill -9 of the delivery process at 24 random moments under load, small batches: the
    rows and the cursor row commit together, so every acknowledged row is there once."""
    postgres.psql(TABLE, db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"],
                         "--deliver-batch", "4K", "--deliver-interval", "20")
    ids = Ids()
    load = Load(s, "events", ids, clients=4, rows=20, seconds=90)
    rng = random.Random(int(os.environ.get("NDINGEST_SEED", "17")))
    try:
        kills = kill_delivery_repeatedly(s, 24, rng)
    finally:
        load.stop()
    assert not load.errors, load.errors[:3]
    assert metric(s, "ndingest_delivery_restarts_total") >= kills
    wait_caught_up(s, "events", len(ids.acked), 180)
    assert_exactly_once(postgres, db, ids.acked)
    assert len(ids.acked) > 1000, len(ids.acked)


def test_kill_delivery_between_copy_and_commit(postgres, db, start_server, tmp_path):
    """With the test-only pause before COMMIT (300 ms), each kill lands after a COPY and
    before its COMMIT (the test waits for the delivery's transaction to be open): it is
    rolled back, and the batch is sent again from the database's cursor row. A server
    without the pause then catches up."""
    postgres.psql(TABLE, db=db)
    env = dict(os.environ, **{PAUSE_ENV: "test-only:300"})
    args = ["--deliver-batch", "4K", "--deliver-interval", "20"]
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"], *args, env=env)
    ids = Ids()
    load = Load(s, "events", ids, clients=2, rows=20, seconds=60)
    rng = random.Random(int(os.environ.get("NDINGEST_SEED", "171")))
    kills = 0
    try:
        for _ in range(20):
            pid = wait_for(lambda: delivery_pid(s), 30, "the delivery process")
            # an open transaction of the delivery's that has COPY'd rows: it pauses now
            wait_for(lambda: postgres.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ndingest' "
                "AND state = 'idle in transaction'", db="postgres") != "0", 30,
                "a transaction before its COMMIT")
            time.sleep(rng.uniform(0, 0.1))
            os.kill(pid, signal.SIGKILL)
            kills += 1
            wait_for(lambda: not alive(pid), 10, "the killed process to go")
    finally:
        load.stop()
    assert "pausing 300 ms before every COMMIT" in s.stderr()
    assert not load.errors, load.errors[:3]
    assert kills == 20
    assert s.stop() == 0
    start_delivering(start_server, tmp_path, postgres, db, ["events"], *args,
                     out_dir=s.out_dir)
    wait_delivered(postgres, db, len(ids.acked), timeout=180)
    time.sleep(1)
    assert_exactly_once(postgres, db, ids.acked)


def test_pause_needs_its_prefix(postgres, db, start_server, tmp_path):
    """A stray value of the test-only variable (no "test-only:" prefix) does nothing."""
    postgres.psql(TABLE, db=db)
    env = dict(os.environ, **{PAUSE_ENV: "300"})
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"], env=env)
    assert post(s, "events", range(1, 11))[0] == 200
    wait_delivered(postgres, db, 10)
    assert "before every COMMIT" not in s.stderr()


def test_postgres_crash_during_load(postgres, db, start_server, tmp_path):
    """pg_ctl stop -m immediate (a crash) three times under load, each followed by a
    restart: retried, and every acknowledged row once."""
    postgres.psql(TABLE, db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"],
                         "--deliver-batch", "8K", "--deliver-interval", "20")
    ids = Ids()
    load = Load(s, "events", ids, clients=4, rows=20, seconds=120)
    try:
        for _ in range(3):
            before = metric(s, "ndingest_delivery_batches_total",
                            'dataset="events",result="stored"') or 0
            wait_for(lambda: (metric(s, "ndingest_delivery_batches_total",
                                     'dataset="events",result="stored"') or 0) > before + 3,
                     60, "stored batches")
            time.sleep(random.uniform(0.0, 0.3))
            postgres.restart(mode="immediate")
    finally:
        load.stop()
    wait_caught_up(s, "events", len(ids.acked), 180)
    assert_exactly_once(postgres, db, ids.acked)
    assert metric(s, "ndingest_delivery_retries_total", 'dataset="events"') > 0


def test_terminate_backend(postgres, db, start_server, tmp_path):
    """pg_terminate_backend on the delivery's connection, repeatedly, under load."""
    postgres.psql(TABLE, db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"],
                         "--deliver-batch", "4K", "--deliver-interval", "20")
    ids = Ids()
    load = Load(s, "events", ids, clients=4, rows=20, seconds=60)
    terminated = 0
    try:
        for _ in range(15):
            time.sleep(random.uniform(0.1, 0.5))
            terminated += postgres.terminate("ndingest")
    finally:
        load.stop()
    assert terminated >= 10, terminated
    wait_caught_up(s, "events", len(ids.acked), 180)
    assert_exactly_once(postgres, db, ids.acked)


def test_postgres_down_for_a_minute_under_load(postgres, db, start_server, tmp_path):
    """60 s without PostgreSQL while 8 clients keep posting: the files buffer, nothing is
    lost, and delivery catches up once it is back."""
    postgres.psql(TABLE, db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"])
    ids = Ids()
    load = Load(s, "events", ids, clients=8, rows=50, seconds=150)
    try:
        time.sleep(2)
        postgres.stop(mode="fast", remove=False)
        down = time.monotonic()
        time.sleep(5)
        assert metric(s, "ndingest_delivery_lag_bytes", 'dataset="events"') > 0
        while time.monotonic() - down < 60:
            time.sleep(1)
        acked_while_down = len(ids.acked)
        postgres.start()
        time.sleep(3)
    finally:
        load.stop()
    assert load.statuses.get(200, 0) > 0 and acked_while_down > 0
    wait_caught_up(s, "events", len(ids.acked), 240)
    assert_exactly_once(postgres, db, ids.acked)


def test_refused_rows_go_to_the_quarantine(postgres, db, start_server, tmp_path):
    """A CHECK constraint (23514) and a numeric overflow (22003) refuse rows: each goes to
    the quarantine with PostgreSQL's message, named by COPY's line (no halving), and the rest
    of its batch arrives."""
    postgres.psql("CREATE TABLE events (id numeric(20,0) NOT NULL, host text NOT NULL "
                  "CHECK (host <> 'zz'), n smallint NOT NULL, s text NOT NULL)", db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"],
                         "--deliver-interval", "500", "--host-id", "h1")
    good = list(range(1, 301))
    check, overflow = [17, 150, 299], [1, 200]
    body = b"".join(json.dumps({"id": i, "host": "zz" if i in check else "h",
                                "n": 100000 if i in overflow else 1, "s": "x"}).encode() + b"\n"
                    for i in good)
    assert s.request("POST", "/v0/events?name=events&wait=true", body)[0] == 200
    wait_caught_up(s, "events", len(good), 120)
    bad = sorted(check + overflow)
    assert sorted(ids_in(postgres, db)) == [i for i in good if i not in bad], s.stderr()
    q = list(csv.reader(io.StringIO((s.out_dir / f"events-{today()}.quarantine.csv").read_text(),
                                    newline="")))
    assert sorted(int(r[3].split(",")[0]) for r in q) == bad
    for r in q:
        i = int(r[3].split(",")[0])
        assert "database: postgresql: COPY" in r[2]
        if i in check:
            assert "[23514]" in r[2] and "check constraint" in r[2], r[2]
        else:
            assert "[22003]" in r[2] and "out of range" in r[2], r[2]
    assert metric(s, "ndingest_delivery_quarantined_total", 'dataset="events"') == len(bad)
    refused = metric(s, "ndingest_delivery_batches_total", 'dataset="events",result="refused"')
    # one or two refusals per bad row (two when rows precede it in its batch: they are sent
    # first, then the row is refused again as the first of the rest), never a halving search
    assert len(bad) <= refused <= 2 * len(bad), refused
    # the database's cursor row is past every row, the quarantined ones too
    day = f"events-{today()}.csv"
    assert cursor_row(postgres, db, "h1") == (day, (s.out_dir / day).stat().st_size)


def test_one_bad_row_in_a_large_batch_round_trips(postgres, db, start_server, tmp_path):
    """One refused row in a full 8 MB batch: PostgreSQL names its line, so the batches sent
    stay at five (the 8 MB refused; the rows before the bad one stored; the rest refused as
    its first row, the row quarantined; the rest stored; the next batch stored), where
    halving would take about two per level, 2 * log2(48,000 rows) ~ 31."""
    postgres.psql("CREATE TABLE events (id numeric(20,0) NOT NULL, host text NOT NULL "
                  "CHECK (host <> 'zz'), n integer NOT NULL, s text NOT NULL)", db=db)
    d = datasets_dir(tmp_path, ["events"])
    out = tmp_path / "out"
    s = start_server("--workers", "2", "--datasets", str(d), out_dir=out)
    n = 60000
    bad = 41234
    body = b"".join(json.dumps({"id": i, "host": "zz" if i == bad else "h", "n": i,
                                "s": "y" * 150}).encode() + b"\n" for i in range(1, n + 1))
    assert s.request("POST", "/v0/events?name=events&wait=true", body)[0] == 200
    day = f"events-{today()}.csv"
    size = (out / day).stat().st_size
    assert size > 8 * 1024 * 1024, size  # more than one default batch
    assert s.stop() == 0
    t0 = time.monotonic()
    s = start_server("--workers", "2", "--datasets", str(d), "--deliver", postgres.url(db=db),
                     "--deliver-interval", "100", "--host-id", "h1", out_dir=out)
    wait_for(lambda: cursor_row(postgres, db, "h1") == (day, size), 120,
             "the cursor row at the end")
    took = time.monotonic() - t0
    assert_exactly_once(postgres, db, set(range(1, n + 1)) - {bad})
    q = (out / f"events-{today()}.quarantine.csv").read_text()
    assert q.count("\n") == 1 and f"{bad}," in q
    label = 'dataset="events",result='
    refused = metric(s, "ndingest_delivery_batches_total", label + '"refused"')
    stored = metric(s, "ndingest_delivery_batches_total", label + '"stored"')
    print(f"one bad row in {size} bytes ({n} rows), 8M batches: {refused:.0f} refused + "
          f"{stored:.0f} stored batches, caught up in {took:.2f} s")
    assert refused + stored <= 6, (refused, stored)


def test_two_hosts_into_one_database(postgres, db, start_server, tmp_path):
    """Two ndingest hosts (own out dirs, --host-id h1 and h2) into one table: each keeps its
    own cursor row, and the table holds the sum of both hosts' acknowledged rows, once."""
    postgres.psql(TABLE, db=db)
    d = datasets_dir(tmp_path, ["events"])
    hosts = [start_server("--workers", "2", "--datasets", str(d), "--deliver",
                          postgres.url(db=db), "--deliver-batch", "8K", "--deliver-interval",
                          "50", "--host-id", f"h{i}") for i in (1, 2)]
    ids = Ids()
    loads = [Load(h, "events", ids, clients=4, rows=25, seconds=15) for h in hosts]
    for load in loads:
        load.stop()
    wait_delivered(postgres, db, len(ids.acked))
    assert_exactly_once(postgres, db, ids.acked)
    day = f"events-{today()}.csv"
    for i, h in zip((1, 2), hosts):
        wait_for(lambda: cursor_row(postgres, db, f"h{i}") ==
                 (day, (h.out_dir / day).stat().st_size), 60, f"h{i}'s cursor row")


def test_database_cursor_wins_over_the_local_one(postgres, db, start_server, tmp_path):
    """The local cursor file is a hint: with it moved back to the start (as a lost or old
    file would be), a restart reads the database's row and sends nothing twice; with the
    database's row deleted (the table emptied with it, as a restore would), everything is
    sent again from the start."""
    postgres.psql(TABLE, db=db)
    d = datasets_dir(tmp_path, ["events"])
    out = tmp_path / "out"
    args = ["--workers", "2", "--datasets", str(d), "--deliver", postgres.url(db=db),
            "--deliver-interval", "50", "--host-id", "h1"]
    s = start_server(*args, out_dir=out)
    assert post(s, "events", range(1, 501))[0] == 200
    wait_delivered(postgres, db, 500)
    wait_caught_up(s, "events", 500)
    assert s.stop() == 0
    local = next((out / ".delivery").glob("postgresql-*")) / "events.cursor"
    text = local.read_text()
    local.write_text("".join("offset 0\n" if ln.startswith("offset ") else ln + "\n"
                             for ln in text.splitlines()))
    s = start_server(*args, out_dir=out)
    assert post(s, "events", range(501, 601))[0] == 200
    wait_delivered(postgres, db, 600)
    wait_caught_up(s, "events", 100)
    assert_exactly_once(postgres, db, set(range(1, 601)))
    assert "the database's is used" in s.stderr()
    assert s.stop() == 0
    postgres.psql("BEGIN; DELETE FROM events; DELETE FROM ndingest_delivery; COMMIT", db=db)
    s = start_server(*args, out_dir=out)
    wait_delivered(postgres, db, 600)
    time.sleep(1)
    assert_exactly_once(postgres, db, set(range(1, 601)))


def test_backpressure_on_lag(postgres, db, start_server, tmp_path):
    """Past --deliver-max-lag new bodies get 503 with Retry-After and nothing is written;
    once PostgreSQL is back and delivery catches up, ingest resumes by itself."""
    postgres.psql(TABLE, db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"],
                         "--deliver-max-lag", "2K")
    postgres.stop(mode="fast", remove=False)
    assert post(s, "events", range(1, 101))[0] == 200  # ~5 KB: past the bound
    day = s.out_dir / f"events-{today()}.csv"
    acked = set(range(1, 101))
    fresh = iter(range(500, 100000, 10))

    def refused():
        first = next(fresh)
        batch = range(first, first + 10)
        status, headers, _ = s.request("POST", "/v0/events?name=events&wait=true",
                                       lines_for(batch))
        if status == 200:
            acked.update(batch)
        return (status, headers) if status == 503 else None
    status, headers = wait_for(refused, 30, "a 503")
    assert headers.get("Retry-After") == "2"
    # each worker judges the pressure once a second (src/pressure.c): the other worker may
    # still take one body in the second it judged before the lag passed the bound
    time.sleep(1.1)
    size = day.stat().st_size
    for _ in range(5):
        assert refused()
    assert day.stat().st_size == size, "a refused body wrote rows"
    assert metric(s, "ndingest_backpressure", 'reason="lag"') == 1
    postgres.start()
    wait_for(lambda: refused() is None, 60, "ingest to resume")
    wait_caught_up(s, "events", len(acked), 60)
    assert_exactly_once(postgres, db, acked)


def test_sighup_adds_a_dataset(postgres, db, start_server, tmp_path):
    for t in ("a", "b"):
        postgres.psql(TABLE.replace("events", t), db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["a"])
    assert post(s, "a", range(1, 101))[0] == 200
    wait_delivered(postgres, db, 100, table="a")
    datasets_dir(tmp_path, ["b"])
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: s.request("POST", "/v0/events?name=b&wait=true",
                               lines_for(range(1000, 1050)))[0] == 200, 30, "b to be served")
    wait_delivered(postgres, db, 50, table="b")
    assert_exactly_once(postgres, db, set(range(1, 101)), table="a")
    assert_exactly_once(postgres, db, set(range(1000, 1050)), table="b")


def test_backpressure_with_postgres_down_from_the_start(postgres, db, start_server, tmp_path):
    """PostgreSQL down before delivery ever connected: the lag is still measured (the loop
    measures while it waits for the server), so backpressure still applies."""
    postgres.psql(TABLE, db=db)
    postgres.stop(mode="fast", remove=False)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"],
                         "--deliver-max-lag", "2K")
    assert post(s, "events", range(1, 101))[0] == 200  # ~5 KB: past the bound
    wait_for(lambda: metric(s, "ndingest_delivery_lag_bytes", 'dataset="events"'), 10,
             "the lag to be measured")
    wait_for(lambda: post(s, "events", range(200, 210))[0] == 503, 10, "a 503")
    postgres.start()
    wait_delivered(postgres, db, 100)


def test_ndingest_deliver_on_its_own(postgres, db, start_server, tmp_path):
    """`ndingest deliver` (no server) catches up on the files, with its cursor row."""
    postgres.psql(TABLE, db=db)
    d = datasets_dir(tmp_path, ["events"])
    out = tmp_path / "out"
    s = start_server("--workers", "2", "--datasets", str(d), out_dir=out)
    assert post(s, "events", range(1, 2001))[0] == 200
    assert s.stop() == 0
    p = subprocess.Popen([str(BINARY), "deliver", "--datasets", str(d), "--out-dir", str(out),
                          "--deliver", postgres.url(db=db), "--deliver-batch", "16K",
                          "--host-id", "h1"], stderr=subprocess.PIPE, text=True)
    try:
        wait_delivered(postgres, db, 2000)
        day = f"events-{today()}.csv"
        wait_for(lambda: cursor_row(postgres, db, "h1") == (day, (out / day).stat().st_size),
                 30, "the cursor row at the end")
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "exactly once by one transaction" in err
    assert_exactly_once(postgres, db, set(range(1, 2001)))


@pytest.fixture(scope="module")
def postgres_tls(tmp_path_factory):
    """A second PostgreSQL 15, with ssl = on and a self-signed certificate for 127.0.0.1."""
    import postgres as pgmod
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for the TLS server")
    server = pgmod.PostgreSQL(tmp_path_factory.mktemp("postgres-tls"), tls=True)
    try:
        yield server
    finally:
        server.stop()


def process_args(server):
    """The argv of the main process and of each of its children (workers, delivery)."""
    args = []
    for pid in [server.proc.pid] + list(worker_pids(server.proc.pid)):
        try:
            args.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return args


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_tls_when_the_url_asks(postgres_tls, start_server, tmp_path, mode):
    """?sslmode=require, and verify-full against the server's certificate (its SAN is
    127.0.0.1, the URL's host): the rows arrive, over a connection pg_stat_ssl says is TLS,
    as the role ingest whose password comes from PGPASSFILE, never on a command line."""
    pg = postgres_tls
    db = "tls_" + mode.replace("-", "_")
    pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", db="postgres")
    pg.psql(f"CREATE DATABASE {db} OWNER ingest", db="postgres")
    pg.psql(TABLE + "; ALTER TABLE events OWNER TO ingest", db=db)
    passfile = tmp_path / "pgpass"
    esc = PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"127.0.0.1:{pg.port}:{db}:ingest:{esc}\n")
    passfile.chmod(0o600)
    params = {"sslmode": mode}
    if mode == "verify-full":
        params["sslrootcert"] = str(pg.cert)
    app = f"ndingest_tls_{mode.replace('-', '_')}"
    params["application_name"] = app
    env = dict(os.environ, PGPASSFILE=str(passfile))
    d = datasets_dir(tmp_path, ["events"])
    s = start_server("--workers", "2", "--datasets", str(d), "--deliver",
                     pg.url(user="ingest", db=db, **params), "--deliver-interval", "100",
                     env=env)
    ids = Ids()
    batch = ids.take(500)
    assert post(s, "events", batch)[0] == 200
    ids.ack(batch)
    wait_delivered(pg, db, len(ids.acked))
    assert_exactly_once(pg, db, ids.acked)
    # the delivery's connection (it stays open between batches) is TLS
    rows = pg.psql("SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a "
                   f"USING (pid) WHERE a.application_name = '{app}'", db="postgres")
    assert rows and all(r[0] == "t" for r in rows), rows
    assert rows[0][1].startswith("TLS"), rows
    for a in process_args(s):
        assert PASSWORD not in a and "password" not in a, a


def test_tls_required_by_a_server_without_it(postgres, db, start_server, tmp_path):
    """sslmode=require against a server with ssl = off: no plain connection; the log says
    why (libpq's "server does not support SSL"), and no row is delivered."""
    postgres.psql(TABLE, db=db)
    d = datasets_dir(tmp_path, ["events"])
    s = start_server("--workers", "2", "--datasets", str(d), "--deliver",
                     postgres.url(db=db, sslmode="require"), "--deliver-interval", "100")
    assert post(s, "events", range(1, 51))[0] == 200
    wait_for(lambda: "server does not support SSL" in s.stderr(), 30,
             "the log to say the server has no TLS")
    time.sleep(1)
    assert counts(postgres, db) == (0, 0)
    assert not postgres.psql("SELECT 1 FROM pg_stat_activity WHERE application_name = "
                             "'ndingest'", db="postgres")


def test_tls_verify_full_checks_the_name(postgres_tls, start_server, tmp_path):
    """verify-full with a host the certificate does not name (localhost, where the SAN is
    the IP 127.0.0.1): refused, and the log says why."""
    pg = postgres_tls
    pg.psql("DROP DATABASE IF EXISTS tls_name WITH (FORCE)", db="postgres")
    pg.psql("CREATE DATABASE tls_name", db="postgres")
    pg.psql(TABLE, db="tls_name")
    d = datasets_dir(tmp_path, ["events"])
    url = (f"postgresql://postgres@localhost:{pg.port}/tls_name?sslmode=verify-full"
           f"&sslrootcert={pg.cert}")
    s = start_server("--workers", "2", "--datasets", str(d), "--deliver", url,
                     "--deliver-interval", "100")
    assert post(s, "events", range(1, 51))[0] == 200
    wait_for(lambda: "does not match host name" in s.stderr(), 30,
             "the log to say the certificate does not name the host")
    assert counts(pg, "tls_name") == (0, 0)


TYPED = """SCHEMA >
    `id` UInt64 `json:$.id`,
    `at` DateTime `json:$.at`,
    `price` Nullable(Decimal(10, 2)) `json:$.price`,
    `tags` Array(String) `json:$.tags`,
    `ok` Bool `json:$.ok`,
    `kind` LowCardinality(String) `json:$.kind`
"""
# The PostgreSQL columns that doc/delivery.md's type table gives for TYPED, as
# information_schema names them: (name, type, is_nullable).
TYPED_COLUMNS = [
    ("id", "numeric(20,0)", "NO"), ("at", "timestamp with time zone", "NO"),
    ("price", "numeric(10,2)", "YES"), ("tags", "text[]", "NO"), ("ok", "boolean", "NO"),
    ("kind", "text", "NO")]


def table_columns(pg, db, table, schema="public"):
    return [(r[0], r[1], r[2]) for r in pg.psql(
        "SELECT column_name, CASE WHEN data_type = 'numeric' THEN format('numeric(%s,%s)', "
        "numeric_precision, numeric_scale) WHEN data_type = 'ARRAY' THEN "
        "ltrim(udt_name, '_') || '[]' ELSE data_type END, is_nullable FROM "
        f"information_schema.columns WHERE table_name = '{table}' AND table_schema = '{schema}' "
        "ORDER BY ordinal_position",
        db=db)]


def test_deliver_create_makes_the_missing_table(postgres, db, start_server, tmp_path):
    """--deliver-create: a typed dataset's missing table is made as `ndingest schema NAME
    --postgres` prints it (the columns' types checked against the documented mapping, not
    against ndingest's output), and its rows arrive as sent."""
    d = datasets_dir(tmp_path, ["typed"], text=TYPED)
    s = start_server("--workers", "2", "--datasets", str(d), "--deliver", postgres.url(db=db),
                     "--deliver-interval", "100", "--deliver-create")
    rows = [{"id": 18446744073709551615 - i, "at": f"2024-01-0{i + 1} 01:02:03",
             "price": None if i == 1 else i + 0.25, "tags": ["a", "b'c"][:i], "ok": i % 2 == 0,
             "kind": "k"} for i in range(3)]
    body = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    assert s.request("POST", "/v0/events?name=typed&wait=true", body)[0] == 200
    wait_delivered(postgres, db, 3, table="typed")
    assert "created the table typed (--deliver-create)" in s.stderr()
    assert "NOTICE" not in s.stderr()
    assert table_columns(postgres, db, "typed") == TYPED_COLUMNS
    got = {int(r["id"]): r for r in postgres.query("SELECT * FROM typed", db=db)}
    for i, r in enumerate(rows):
        g = got[r["id"]]
        assert g["at"] == f"2024-01-0{i + 1}T01:02:03+00:00"
        assert g["price"] == (None if r["price"] is None else f"{r['price']:.2f}")
        assert g["tags"] == r["tags"] and g["ok"] == r["ok"]
    # and the table is what `schema --postgres` prints: made here by psql, it is the same
    schema = subprocess.run([str(BINARY), "schema", "typed", "--datasets", str(d), "--postgres"],
                            capture_output=True, text=True, check=True).stdout
    postgres.psql("CREATE SCHEMA other; SET search_path = other; " + schema, db=db)
    assert table_columns(postgres, db, "typed", schema="other") == TYPED_COLUMNS


def test_deliver_create_classic_untyped_dataset(postgres, db, start_server):
    """--deliver-create with the classic dataset (--name, --columns): a table of text
    columns, and the cells arrive as any CSV reader of the day file reads them."""
    s = start_server("--workers", "2", "--name", "classic", "--columns", "a,b,c",
                     "--deliver", postgres.url(db=db), "--deliver-interval", "100",
                     "--deliver-create")
    body = b"".join(json.dumps({"a": f"x{i}", "b": TEXTS[i % len(TEXTS)], "c": i}).encode() +
                    b"\n" for i in range(100))
    assert s.post(body)[0] == 200
    wait_delivered_count = lambda: postgres.scalar("SELECT count(*) FROM classic", db=db)  # noqa
    wait_for(lambda: _up(postgres) and postgres.scalar(
        "SELECT to_regclass('classic') IS NOT NULL", db=db) == "t" and
        wait_delivered_count() == "100", 60, "100 rows in classic")
    assert table_columns(postgres, db, "classic") == [
        ("a", "text", "NO"), ("b", "text", "NO"), ("c", "text", "NO")]
    rows = {r["a"]: r for r in postgres.query("SELECT a, b, c FROM classic", db=db)}
    for i in range(100):
        assert (rows[f"x{i}"]["b"], rows[f"x{i}"]["c"]) == (TEXTS[i % len(TEXTS)], str(i))


def test_deliver_create_leaves_an_existing_table(postgres, db, start_server, tmp_path):
    """--deliver-create does not touch a table that exists but lacks a column: the dataset
    waits, as without the option, and the table is unchanged."""
    postgres.psql("CREATE TABLE events (id numeric(20,0), host text, n integer)", db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"], "--deliver-create")
    assert post(s, "events", range(1, 11))[0] == 200
    wait_for(lambda: metric(s, "ndingest_delivery_waiting", 'dataset="events"') == 1, 30,
             "the dataset to wait")
    assert [c[0] for c in table_columns(postgres, db, "events")] == ["id", "host", "n"]
    assert "--deliver-create:" not in s.stderr()


def hold_lock(pg, db, sql, seconds):
    """Another session holding a lock: psql running `BEGIN; sql; pg_sleep; COMMIT`, in the
    background; returns the process once the lock is held (pg_locks shows it granted)."""
    env = dict(os.environ, PGTZ="UTC")
    env.pop("PGPASSFILE", None)
    p = subprocess.Popen(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(pg.sockdir), "-p", str(pg.port),
         "-U", "postgres", "-d", db, "-c", "SET application_name = 'locker'",
         "-c", f"BEGIN; {sql}; SELECT pg_sleep({seconds}); COMMIT;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wait_for(lambda: pg.scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE "
        "a.application_name = 'locker' AND l.granted AND l.locktype IN ('relation', 'tuple', "
        "'transactionid') AND l.mode IN ('AccessExclusiveLock', 'RowShareLock', "
        "'ExclusiveLock')", db="postgres") != "0", 20, "the locker's lock")
    return p


@pytest.mark.parametrize("lock", ["table", "cursor_row"])
def test_a_held_lock_times_out_and_is_retried(postgres, db, start_server, tmp_path, lock):
    """Another session holds a lock that delivery's statements wait on (LOCK TABLE events IN
    ACCESS EXCLUSIVE MODE, which COPY waits on; or the cursor row locked FOR UPDATE, which
    the batch's first statement waits on) for 8 s: with --deliver-timeout 1 each try is
    cancelled after a second (statement_timeout / lock_timeout), logged, and retried with
    backoff; once the lock is released the rows arrive, once."""
    postgres.psql(TABLE, db=db)
    s = start_delivering(start_server, tmp_path, postgres, db, ["events"], "--deliver-timeout",
                         "1", "--host-id", "h1")
    first = list(range(1, 101))
    assert post(s, "events", first)[0] == 200
    wait_delivered(postgres, db, len(first))
    sql = ("LOCK TABLE events IN ACCESS EXCLUSIVE MODE" if lock == "table" else
           "SELECT 1 FROM ndingest_delivery WHERE host = 'h1' FOR UPDATE")
    locker = hold_lock(postgres, db, sql, 8)
    t0 = time.monotonic()
    try:
        second = list(range(101, 301))
        assert post(s, "events", second)[0] == 200
        wait_for(lambda: (metric(s, "ndingest_delivery_retries_total", 'dataset="events"') or 0) >= 2, 7,
                 "two tries cancelled while the lock is held")
        assert locker.poll() is None, "the lock was released too early to tell"
        log = s.stderr()
        assert ("canceling statement due to lock timeout" in log or
                "canceling statement due to statement timeout" in log), log[-2000:]
    finally:
        locker.wait(30)
    assert locker.returncode == 0, locker.stderr.read()
    assert time.monotonic() - t0 >= 7
    wait_delivered(postgres, db, len(first) + len(second), timeout=60)
    assert_exactly_once(postgres, db, set(first + second))
