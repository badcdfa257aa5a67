"""test_cluster.py -- ndingest's tables on a ClickHouse 18.16 cluster (two shards, one replica
each, ZooKeeper; tests/integration/clickhouse.py, Cluster), and the cluster's behaviours that
delivery relies on, measured: `schema --clickhouse --database DB --cluster NAME` creates
replicated local tables and Distributed tables over them on every server; a resent identical
INSERT body into a ReplicatedMergeTree is dropped, gzip'd or not; a Distributed INSERT is
stored on the shards only with insert_distributed_sync=1, and with rand() sharding a resent
body is not dropped; an INSERT while ZooKeeper is down is refused with a code delivery must
retry, and goes in once ZooKeeper is back. doc/scaling.md ("Delivery into a ClickHouse
cluster") draws the conclusions; the figures printed here (pytest -s) are the ones it quotes.
"""
import gzip
import http.client
import subprocess
import time
import urllib.parse

import pytest

from conftest import BINARY
from clickhouse import DDL_SETTINGS, STRICT_CSV, ClickHouseError
from test_schema import run_sql

CLUSTER, DB, NAME = "ndingest", "events", "trips"
DEFINITION = """SCHEMA >
    `id` UInt64 `json:$.id`,
    `host` LowCardinality(String) `json:$.host` DEFAULT 'unknown',
    `at` DateTime `json:$.at`
ENGINE_PARTITION_KEY "toYYYYMM(at)"
ENGINE_SORTING_KEY "id"
"""
COLUMNS = [("id", "UInt64"), ("host", "LowCardinality(String)"), ("at", "DateTime('UTC')")]
QUARANTINE = [("insertion_date", "DateTime('UTC')"), ("c__error_column", "Array(String)"),
              ("c__error", "Array(String)"), ("line", "String")]


def rows(first, n, host="h1"):
    """n CSV rows with ids first..first+n-1, as the writer formats them."""
    return "".join(f'{i},"{host}","2026-12-07 01:02:03"\n'
                   for i in range(first, first + n)).encode()


def post(server, sql, body, headers=None, **settings):
    """POSTs body as the data of the INSERT sql over HTTP with the given headers (as delivery
    will): (status, response text, ClickHouse's error code or 0)."""
    params = urllib.parse.urlencode({"query": sql, **STRICT_CSV, **settings})
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    try:
        conn.request("POST", "/?" + params, body=body, headers=headers or {})
        r = conn.getresponse()
        text = r.read().decode(errors="replace")
    finally:
        conn.close()
    code = int(text[6:text.index(",")]) if text.startswith("Code: ") else 0
    return r.status, text, code


def count(server, table):
    return int(server.query(f"SELECT count() FROM {DB}.{table}"))


@pytest.fixture(scope="module")
def cluster(clickhouse_cluster, tmp_path_factory):
    """The cluster with `schema --cluster`'s statements run on each server."""
    d = tmp_path_factory.mktemp("defs")
    (d / f"{NAME}.datasource").write_text(DEFINITION)
    p = subprocess.run([str(BINARY), "schema", NAME, "--datasets", str(d), "--clickhouse",
                        "--database", DB, "--cluster", CLUSTER], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    clickhouse_cluster.ddl = p.stdout.decode()
    for server in clickhouse_cluster.servers:
        run_sql(server, clickhouse_cluster.ddl)
    return clickhouse_cluster


@pytest.fixture
def table(cluster, request):
    """A fresh table of the test's own on every shard: TABLE_local replicated (on its own
    ZooKeeper path, so no other test's blocks count) and TABLE Distributed over it by
    rand(). Dropped afterwards."""
    name = request.node.name.replace("test_", "t_")[:40]
    for s in cluster.servers:
        s.query(f"CREATE TABLE {DB}.{name}_local AS {DB}.{NAME}_local ENGINE = "
                f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{DB}.{name}_local', "
                f"'{{replica}}') PARTITION BY toYYYYMM(at) ORDER BY id", **DDL_SETTINGS)
        s.query(f"CREATE TABLE {DB}.{name} AS {DB}.{name}_local ENGINE = "
                f"Distributed({CLUSTER}, {DB}, {name}_local, rand())", **DDL_SETTINGS)
    yield name
    for s in cluster.servers:
        s.query(f"DROP TABLE IF EXISTS {DB}.{name}")
        s.query(f"DROP TABLE IF EXISTS {DB}.{name}_local")


def describe(server, table):
    return [(r["name"], r["type"]) for r in server.rows(f"DESCRIBE TABLE {DB}.{table}")]


def test_schema_creates_local_and_distributed_tables_on_both_shards(cluster):
    assert "ON CLUSTER" not in cluster.ddl
    for shard, s in enumerate(cluster.servers, 1):
        for table, columns in ((NAME, COLUMNS), (NAME + "_quarantine", QUARANTINE)):
            assert describe(s, table + "_local") == columns, (shard, table)
            assert describe(s, table) == columns, (shard, table)
        engines = {r["name"]: r["engine"] for r in s.rows(
            f"SELECT name, engine FROM system.tables WHERE database = '{DB}' "
            f"AND name LIKE '{NAME}%'")}
        assert engines == {NAME: "Distributed", NAME + "_local": "ReplicatedMergeTree",
                           NAME + "_quarantine": "Distributed",
                           NAME + "_quarantine_local": "ReplicatedMergeTree"}, engines
        paths = s.rows(f"SELECT table, zookeeper_path, replica_name FROM system.replicas "
                       f"WHERE database = '{DB}' AND table LIKE '{NAME}%' ORDER BY table")
        assert paths == [
            {"table": f"{NAME}_local", "replica_name": "r1",
             "zookeeper_path": f"/clickhouse/tables/{shard:02d}/{DB}.{NAME}_local"},
            {"table": f"{NAME}_quarantine_local", "replica_name": "r1",
             "zookeeper_path": f"/clickhouse/tables/{shard:02d}/{DB}.{NAME}_quarantine_local"},
        ], paths
        keys = s.rows(f"SELECT partition_key, sorting_key FROM system.tables "
                      f"WHERE database = '{DB}' AND name = '{NAME}_local'")
        assert keys == [{"partition_key": "toYYYYMM(at)", "sorting_key": "id"}], keys


def test_a_row_on_each_shard_is_counted_by_the_distributed_table(cluster):
    a, b = cluster.servers
    assert post(a, f"INSERT INTO {DB}.{NAME}_local FORMAT CSV", rows(1, 1))[0] == 200
    assert post(b, f"INSERT INTO {DB}.{NAME}_local FORMAT CSV", rows(2, 1))[0] == 200
    assert (count(a, NAME + "_local"), count(b, NAME + "_local")) == (1, 1)
    for s in (a, b):  # each server's Distributed table reads both shards
        assert count(s, NAME) == 2
        assert s.rows(f"SELECT id FROM {DB}.{NAME} ORDER BY id") == [{"id": "1"}, {"id": "2"}]
    # The same block again into a shard's local table: dropped, the totals stay.
    assert post(a, f"INSERT INTO {DB}.{NAME}_local FORMAT CSV", rows(1, 1))[0] == 200
    assert count(a, NAME + "_local") == 1 and count(b, NAME) == 2
    # The quarantine's pair works the same.
    q = b'"2026-12-07 01:02:03","[\'id\']","[\'not a number\']","{""id"": ""x""}"\n'
    assert post(b, f"INSERT INTO {DB}.{NAME}_quarantine_local FORMAT CSV", q)[0] == 200
    assert post(b, f"INSERT INTO {DB}.{NAME}_quarantine_local FORMAT CSV", q)[0] == 200
    assert count(a, NAME + "_quarantine") == 1


def test_a_resent_block_is_dropped_by_replicated_merge_tree(cluster, table):
    """(a) The property exactly-once rests on: the same body three times leaves it once.
    Against the same body into a plain MergeTree (kept three times) and into the replicated
    table with insert_deduplicate=0 (kept again), so the test can tell."""
    a = cluster.servers[0]
    body = rows(1000, 5000)
    for _ in range(3):
        status, text, _ = post(a, f"INSERT INTO {DB}.{table}_local FORMAT CSV", body,
                               insert_deduplicate=1)
        assert status == 200, text
    assert count(a, table + "_local") == 5000
    # A different body (one row more) is another block: stored.
    assert post(a, f"INSERT INTO {DB}.{table}_local FORMAT CSV", rows(1000, 5001))[0] == 200
    assert count(a, table + "_local") == 10001
    # insert_deduplicate=0 turns it off: the property is the setting's, not chance.
    assert post(a, f"INSERT INTO {DB}.{table}_local FORMAT CSV", body,
                insert_deduplicate=0)[0] == 200
    assert count(a, table + "_local") == 15001
    a.query(f"CREATE TABLE {DB}.{table}_plain AS {DB}.{table}_local ENGINE = MergeTree "
            f"ORDER BY id", **DDL_SETTINGS)
    try:
        for _ in range(3):
            assert post(a, f"INSERT INTO {DB}.{table}_plain FORMAT CSV", body)[0] == 200
        assert count(a, table + "_plain") == 15000
    finally:
        a.query(f"DROP TABLE {DB}.{table}_plain")


def test_a_gzipped_body_deduplicates_as_plain(cluster, table):
    """(b) Content-Encoding: gzip on the request: the server inflates it, and the block it
    parses is the plain body's, so plain, level 1 and level 9 are one block."""
    a = cluster.servers[0]
    body = rows(1, 20000)
    sql = f"INSERT INTO {DB}.{table}_local FORMAT CSV"
    fast, small = gzip.compress(body, 1), gzip.compress(body, 9)
    assert fast != small
    status, text, _ = post(a, sql, fast, {"Content-Encoding": "gzip"})
    assert status == 200, text
    assert count(a, table + "_local") == 20000
    for data, headers in ((small, {"Content-Encoding": "gzip"}), (body, {}),
                          (fast, {"Content-Encoding": "gzip"})):
        status, text, _ = post(a, sql, data, headers)
        assert status == 200, text
        assert count(a, table + "_local") == 20000
    print(f"\ngzip: {len(body)} bytes sent as {len(fast)} (level 1) / {len(small)} (level 9): "
          f"one block")
    # A gzip'd body of other rows is stored: the dedup is by content.
    status, text, _ = post(a, sql, gzip.compress(rows(20001, 10)), {"Content-Encoding": "gzip"})
    assert status == 200, text
    assert count(a, table + "_local") == 20010


def shard_counts(cluster, table):
    return [count(s, table + "_local") for s in cluster.servers]


def test_distributed_insert_sync_stores_on_shards_but_rand_defeats_dedup(cluster, table):
    """(c) An INSERT into the Distributed table: with insert_distributed_sync=1 it returns
    after the shards stored their parts; by default (0) it returns once the rows are queued
    on the receiving server's disk. Either way rand() splits a resent body differently, so
    the shards' blocks differ from the first time's and nothing is dropped."""
    a = cluster.servers[0]
    n = 1000
    body = rows(1, n)
    sql = f"INSERT INTO {DB}.{table} FORMAT CSV"
    t0 = time.monotonic()
    status, text, _ = post(a, sql, body, insert_distributed_sync=1)
    took = time.monotonic() - t0
    assert status == 200, text
    first = shard_counts(cluster, table)  # read at once: no waiting for a background send
    assert sum(first) == n and min(first) > 0, first
    status, text, _ = post(a, sql, body, insert_distributed_sync=1)
    assert status == 200, text
    second = shard_counts(cluster, table)
    print(f"\nDistributed INSERT, sync: {took * 1000:.0f} ms for {n} rows; shards "
          f"{first} after the first, {second} after the same body again")
    # The resent body was split anew: each shard got a block it had not seen, and kept it.
    assert sum(second) == 2 * n, second

    # Asynchronous (18.16's default): the INSERT returns before the shards have the rows.
    other = rows(100001, n)
    t0 = time.monotonic()
    status, text, _ = post(a, sql, other, insert_distributed_sync=0)
    assert status == 200, text
    at_return = shard_counts(cluster, table)
    while sum(shard_counts(cluster, table)) < 3 * n and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    later = shard_counts(cluster, table)
    print(f"Distributed INSERT, async: at its 200 the shards held {sum(at_return) - 2 * n} "
          f"of its {n} rows; all {sum(later) - 2 * n} after {time.monotonic() - t0:.2f} s")
    assert sum(later) == 3 * n, later
    # The local shard's part is written at once or from the queue; the remote one is sent
    # from the queue: at the 200 the remote shard had none of its rows.
    assert at_return[1] == second[1], (at_return, second)


def test_a_distributed_table_sharded_by_a_key_deduplicates_with_sync(cluster, table):
    """The contrast to rand(): sharded by the row's id, a resent body splits the same way,
    each shard's block is the same, and with insert_distributed_sync=1 it is dropped."""
    a = cluster.servers[0]
    for s in cluster.servers:
        s.query(f"CREATE TABLE {DB}.{table}_by_id AS {DB}.{table}_local ENGINE = "
                f"Distributed({CLUSTER}, {DB}, {table}_local, intHash64(id))", **DDL_SETTINGS)
    try:
        body = rows(1, 1000)
        for _ in range(2):
            status, text, _ = post(a, f"INSERT INTO {DB}.{table}_by_id FORMAT CSV", body,
                                   insert_distributed_sync=1)
            assert status == 200, text
        counts = shard_counts(cluster, table)
        assert sum(counts) == 1000 and min(counts) > 0, counts
    finally:
        for s in cluster.servers:
            s.query(f"DROP TABLE {DB}.{table}_by_id")


def test_insert_while_zookeeper_is_down_is_refused_then_goes_in_once(cluster, table):
    """(d) ZooKeeper stopped: an INSERT into a replicated table is refused with an error code
    (delivery classifies it as retry, never as a refused row); once ZooKeeper is back the
    same body goes in, once, and a block sent before the outage is still dropped. Runs last
    (it stops the module's ZooKeeper, and starts it again)."""
    a = cluster.servers[0]
    sql = f"INSERT INTO {DB}.{table}_local FORMAT CSV"
    before = rows(1, 100)
    assert post(a, sql, before)[0] == 200
    body = rows(1001, 100)
    zk = cluster.zookeeper
    zk.stop(remove=False)
    seen = {}
    try:
        t0 = time.monotonic()
        # The session lives on for CLUSTER_SESSION_TIMEOUT_MS; try across it and past it.
        while time.monotonic() - t0 < 15:
            status, text, code = post(a, sql, body)
            assert status != 200, "an INSERT went in with ZooKeeper down"
            first_line = text.split("\n")[0][:160]
            seen.setdefault((status, code), (round(time.monotonic() - t0, 2), first_line))
            time.sleep(0.5)
        assert count(a, table + "_local") == 100  # reads go on, from the local parts
    finally:
        t1 = time.monotonic()
        zk.start()
        zk_back = time.monotonic() - t1
    print("\nINSERT with ZooKeeper down: (HTTP status, Code) -> first seen after s, message")
    for k, v in sorted(seen.items(), key=lambda kv: kv[1][0]):
        print(f"  {k} -> {v}")
    codes = {code for _, code in seen}
    assert codes and 0 not in codes, seen
    # None is a code delivery quarantines rows for (doc/delivery.md: 27, 49, 72, 117, ...).
    assert not codes & {6, 27, 38, 41, 49, 53, 69, 72, 117, 241}, seen
    t2 = time.monotonic()
    while True:
        status, text, code = post(a, sql, body)
        if status == 200:
            break
        seen.setdefault(("after restart", status, code), text.split("\n")[0][:160])
        assert time.monotonic() - t2 < 120, f"no INSERT went in after ZooKeeper came back: {text}"
        time.sleep(0.2)
    print(f"ZooKeeper back in {zk_back:.2f} s; the first INSERT went in "
          f"{time.monotonic() - t2:.2f} s later; on the way: "
          f"{[k for k in seen if k[0] == 'after restart']}")
    assert count(a, table + "_local") == 200
    assert post(a, sql, body)[0] == 200  # the retry of the retry: dropped
    assert post(a, sql, before)[0] == 200  # a block from before the outage: still known
    assert count(a, table + "_local") == 200
