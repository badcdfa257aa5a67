"""test_datasets_clickhouse.py -- a server with --datasets, end to end into a real ClickHouse
(18.16, tests/integration/clickhouse.py): events posted to /v0/events for two datasets (the
issue's taxi trips, and events reaching every type 18.16 has through nested paths) become day
files and quarantines that load with `INSERT ... FORMAT CSV` into the tables `ndingest schema
--clickhouse` creates, with no row rejected; SELECTs give back the values sent, computed here
from the events independently of ndingest; the quarantine gives back each refused line byte
for byte, with the columns and reasons."""
import csv
import datetime
import decimal
import gzip
import io
import json
import math
import random
import struct
import subprocess
import uuid

from conftest import BINARY, today
from test_schema import run_sql

TRIPS = """DESCRIPTION >
    Taxi trips
SCHEMA >
    `vendorid` UInt8 `json:$.vendorid`,
    `pickup_at` DateTime `json:$.tpep_pickup_datetime`,
    `distance` Float64 `json:$.trip_distance`,
    `total` Decimal(10, 2) `json:$.total_amount`,
    `zone` LowCardinality(String) `json:$.pickup.zone.name` DEFAULT 'unknown',
    `tags` Array(String) `json:$.tags[:]`,
    `note` Nullable(String) `json:$.note`
ENGINE "MergeTree"
ENGINE_SORTING_KEY "pickup_at"
"""

# Every type 18.16 can hold, each read through a path of another shape.
EVENTS = """SCHEMA >
    `id` UInt32 `json:$.id`,
    `i8` Int8 `json:$.n.i8`,
    `i16` Int16 `json:$.n.i16`,
    `i32` Int32 `json:$.n.deep.i32`,
    `i64` Int64 `json:$.n['i.64']`,
    `u8` UInt8 `json:$.n.u[0]`,
    `u16` UInt16 `json:$.n.u[1]`,
    `u32` UInt32 `json:$.n.u[2]`,
    `u64` UInt64 `json:$.n.u[3]`,
    `f32` Float32 `json:$.f.f32`,
    `f64` Float64 `json:$.f["f 64"]`,
    `dec` Decimal(18, 4) `json:$.money.amount`,
    `s` String `json:$.text`,
    `d` Date `json:$.when.day`,
    `dt` DateTime `json:$.when.at`,
    `u` UUID `json:$.uuid`,
    `lc` LowCardinality(String) `json:$.user.geo.country` DEFAULT 'unknown',
    `ni` Nullable(Int32) `json:$.maybe`,
    `as` Array(String) `json:$.tags[:]`,
    `ids` Array(Nullable(Int32)) `json:$.items[:].id`,
    `aa` Array(Array(Int64)) `json:$.matrix`
ENGINE_SORTING_KEY "id"
"""

TEXTS = ['plain', 'a "quoted" word, with a comma', "two\nlines\\N back\\slash", "naïve 日本 🚀",
         "'tis", " padded\t", "", "\u0001 control"]


def utc_text(local, offset_minutes):
    """The UTC time of a local time at an offset, as the day file writes it."""
    t = local - datetime.timedelta(minutes=offset_minutes)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def offset_text(minutes):
    if minutes == 0:
        return "Z"
    sign = "+" if minutes > 0 else "-"
    m = abs(minutes)
    return f"{sign}{m // 60:02d}:{m % 60:02d}"


def make_event(rng, i):
    """(the JSON line, the row ClickHouse must give back) for event i."""
    local = datetime.datetime(2000, 1, 1) + datetime.timedelta(seconds=rng.randrange(0, 40 * 365 * 86400))
    offset = rng.choice([0, 60, -90, 330, -720, 840])
    # 18.16 keeps Dates up to 2105-12-31 (doc/datasets.md, section 7)
    day = datetime.date(1971, 1, 1) + datetime.timedelta(days=rng.randrange(0, 49000))
    if i % 7 == 0:
        day = datetime.date(2024, 2, 29)
    ints = [rng.randrange(-128, 128), rng.randrange(-32768, 32768),
            rng.randrange(-2**31, 2**31), rng.randrange(-2**63, 2**63)]
    if i % 11 == 0:
        ints = [-128, 32767, -2**31, 2**63 - 1]
    uns = [rng.randrange(0, 256), rng.randrange(0, 65536), rng.randrange(0, 2**32),
           rng.randrange(0, 2**64)]
    # Dyadic fractions: exact in binary, so 18.16's float reader (not correctly rounded,
    # doc/datasets.md section 7) gives them back exactly.
    f32 = rng.randrange(-2**20, 2**20) / 64
    f64 = rng.randrange(-2**50, 2**50) / 1024
    cents = rng.randrange(-10**12, 10**12)
    amount = decimal.Decimal(cents).scaleb(-2)
    u = uuid.UUID(int=rng.getrandbits(128))
    text = TEXTS[i % len(TEXTS)]
    country = rng.choice(["ES", "FR", "JP", None])
    maybe = None if i % 3 == 0 else rng.randrange(-1000, 1000)
    tags = [rng.choice(TEXTS) for _ in range(rng.randrange(0, 4))]
    items = [{"id": rng.randrange(-5, 5)} if rng.random() < 0.8 else {"other": 1}
             for _ in range(rng.randrange(0, 4))]
    matrix = [[rng.randrange(-2**63, 2**63) for _ in range(rng.randrange(0, 3))]
              for _ in range(rng.randrange(0, 3))]
    event = {
        "id": i,
        "n": {"i8": ints[0], "i16": ints[1], "deep": {"i32": ints[2], "x": [1, {"i32": 0}]},
              "i.64": ints[3], "u": uns},
        "f": {"f32": f32, "f 64": f64},
        "money": {"amount": None},  # replaced by the exact text below
        "text": text,
        "when": {"day": day.isoformat(),
                 "at": local.strftime("%Y-%m-%dT%H:%M:%S") + offset_text(offset)},
        "uuid": str(u).upper() if i % 2 else u.hex,
        "user": {"geo": {"country": country}} if country else {"name": "x"},
        "maybe": maybe,
        "tags": tags,
        "items": items,
        "matrix": matrix,
    }
    line = json.dumps(event, ensure_ascii=i % 2 == 0)
    # The amount as exact decimal text (json.dumps of a float could round it).
    line = line.replace('"amount": null', f'"amount": {amount}')
    want = {
        "id": i, "i8": ints[0], "i16": ints[1], "i32": ints[2], "i64": str(ints[3]),
        "u8": uns[0], "u16": uns[1], "u32": uns[2], "u64": str(uns[3]),
        "f32": f32, "f64": f64, "dec": f"{amount:.4f}", "s": text, "d": day.isoformat(),
        "dt": utc_text(local, offset), "u": str(u), "lc": country or "unknown", "ni": maybe,
        "as": tags, "ids": [it.get("id") for it in items], "aa": [[str(x) for x in r] for r in matrix],
    }
    return line.encode(), want


def trip_line(rng, record, i):
    """A taxi record with the nested and optional fields the trips definition reads."""
    extra = {}
    if i % 3:
        extra["pickup"] = {"zone": {"name": rng.choice(["JFK", "Midtown", "Astoria"]), "id": i}}
    extra["tags"] = [rng.choice(["card", "cash", "night"]) for _ in range(i % 3)]
    if i % 4 == 0:
        extra["note"] = "late, \"very\""
    record = {**record, **extra}
    total = decimal.Decimal(str(record["total_amount"]))
    want = (record["vendorid"], record["tpep_pickup_datetime"], record["trip_distance"],
            f"{total:.2f}", record.get("pickup", {}).get("zone", {}).get("name", "unknown"),
            tuple(record["tags"]), record.get("note"))
    return json.dumps(record).encode(), want


def post(srv, name, body, gz=False):
    headers = {"Content-Type": "application/x-ndjson"}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    status, _, resp = srv.request("POST", f"/v0/events?name={name}&wait=true", body, headers)
    return status, resp


def load(clickhouse, srv, name, datasets):
    sql = subprocess.run([str(BINARY), "schema", name, "--datasets", str(datasets), "--clickhouse"],
                         capture_output=True, timeout=30)
    assert sql.returncode == 0, sql.stderr
    run_sql(clickhouse, sql.stdout.decode())
    day = today(utc=True)
    rows = (srv.out_dir / f"{name}-{day}.csv").read_bytes()
    quarantine_path = srv.out_dir / f"{name}-{day}.quarantine.csv"
    quarantine = quarantine_path.read_bytes() if quarantine_path.exists() else b""
    return (clickhouse.load_csv(name, rows), csv_records(rows),
            clickhouse.load_csv(f"{name}_quarantine", quarantine), csv_records(quarantine))


def csv_records(data):
    """CSV records, not lines: a quoted cell may hold a line end."""
    return sum(1 for _ in csv.reader(io.StringIO(data.decode("latin-1"), newline="")))


def quarantined(clickhouse, table):
    back = clickhouse.rows(f"SELECT c__error_column, c__error, hex(line) AS hex FROM `{table}`")
    return {bytes.fromhex(r["hex"]): (r["c__error_column"], r["c__error"]) for r in back}


def test_server_day_files_and_quarantines_load_into_clickhouse(tmp_path, start_server, clickhouse,
                                                               taxi_body):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "trips.datasource").write_text(TRIPS)
    (datasets / "events.datasource").write_text(EVENTS)
    srv = start_server("--workers", "2", "--datasets", str(datasets), "--utc")
    rng = random.Random(11)

    trips, want_trips = [], []
    for i, line in enumerate(taxi_body.splitlines()[:600]):
        raw, want = trip_line(rng, json.loads(line), i)
        trips.append(raw)
        want_trips.append(want)
    bad_trips = {
        b'{"vendorid": 300, "tpep_pickup_datetime": "2017-01-01 00:00:07", "trip_distance": 1,'
        b' "total_amount": 1}': (["vendorid", "tags"]),
        b'{"vendorid": 1, "tpep_pickup_datetime": "2017-02-29 00:00:07", "trip_distance": 1,'
        b' "total_amount": 1.234}': (["pickup_at", "total", "tags"]),
        b'{"vendorid": 1, "tpep_pickup_datetime": "2017-01-01 00:00:07", "trip_distance": "far",'
        b' "total_amount": 1}': (["distance", "tags"]),
        b'{"vendorid": 1, "note": "\xff\xfe not UTF-8"}': ([]),
        b'{"vendorid": 1,}': ([]),
    }
    body = b"\n".join(trips[:300] + list(bad_trips) + trips[300:]) + b"\n"
    status, resp = post(srv, "trips", body[:len(body) // 2].rsplit(b"\n", 1)[0] + b"\n")
    assert status == 200, resp
    first = json.loads(resp)
    status, resp = post(srv, "trips", body[len(body[:len(body) // 2].rsplit(b"\n", 1)[0]) + 1:],
                        gz=True)
    assert status == 200, resp
    second = json.loads(resp)
    assert first["successful_rows"] + second["successful_rows"] == len(trips)
    assert first["quarantined_rows"] + second["quarantined_rows"] == len(bad_trips)

    events, want_events = [], []
    for i in range(400):
        raw, want = make_event(rng, i)
        events.append(raw)
        want_events.append(want)
    good = json.loads(events[1])
    bad_events = {}
    for cols, change in [(["i8"], {"n": {**good["n"], "i8": 128}}),
                         (["u64"], {"n": {**good["n"], "u": [0, 0, 0, 2**64]}}),
                         (["dec"], {"money": {"amount": 0.00001}}),
                         (["d"], {"when": {**good["when"], "day": "2023-02-29"}}),
                         (["id"], {"id": None}),
                         (["ids"], {"items": [{"id": 1.5}]}),
                         (["u"], {"uuid": "not-a-uuid"})]:
        bad_events[json.dumps({**good, **change}).encode()] = cols
    bad_events[b'{"id": 5, "text": "\xc3\x28 invalid"}'] = []
    bad_events[b'{"id": 6, "text": "unterminated}'] = []
    status, resp = post(srv, "events", b"\n".join(events + list(bad_events)) + b"\n")
    assert status == 200, resp
    assert json.loads(resp) == {"successful_rows": len(events), "quarantined_rows": len(bad_events)}

    loaded, written, qloaded, qwritten = load(clickhouse, srv, "trips", datasets)
    assert (loaded, written) == (len(trips), len(trips))
    assert (qloaded, qwritten) == (len(bad_trips), len(bad_trips))
    back = clickhouse.rows("SELECT vendorid, toString(pickup_at) AS p, distance, toString(total) AS t,"
                           " zone, tags, note FROM trips")
    # 18.16 reads some Float64 texts one ULP off (doc/datasets.md, section 7): the distance
    # is compared within one ULP, everything else exactly.
    got = sorted((r["vendorid"], r["p"], r["t"], r["zone"], tuple(r["tags"]), r["note"],
                  float(r["distance"])) for r in back)
    want = sorted((v, p, t, z, tg, n, float(d)) for v, p, d, t, z, tg, n in want_trips)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[:-1] == w[:-1] and abs(g[-1] - w[-1]) <= math.ulp(w[-1]), (g, w)
    q = quarantined(clickhouse, "trips_quarantine")
    assert set(q) == set(bad_trips)
    for line, cols in bad_trips.items():
        columns, reasons = q[line]
        assert columns == cols and len(reasons) == max(1, len(cols)), (line, q[line])
        assert all(reasons), (line, q[line])
        if not cols and line.startswith(b'{"vendorid": 1,}'):
            assert reasons[0].startswith("invalid JSON at byte 15"), reasons

    loaded, written, qloaded, qwritten = load(clickhouse, srv, "events", datasets)
    assert (loaded, written) == (len(events), len(events))
    assert (qloaded, qwritten) == (len(bad_events), len(bad_events))
    back = clickhouse.rows("SELECT id, i8, i16, i32, i64, u8, u16, u32, u64, toString(f32) AS f32,"
                           " toString(f64) AS f64, toString(dec) AS dec, s, toString(d) AS d,"
                           " toString(dt) AS dt, u, lc, ni, as, ids, aa FROM events ORDER BY id")
    assert len(back) == len(want_events)
    for row, want in zip(back, want_events):
        row = dict(row)
        row["f32"], row["f64"] = float(row["f32"]), float(row["f64"])
        row["i64"], row["u64"] = str(row["i64"]), str(row["u64"])
        row["aa"] = [[str(x) for x in r] for r in row["aa"]]
        f64, want_f64 = row.pop("f64"), want["f64"]
        assert abs(f64 - want_f64) <= math.ulp(want_f64), (f64, want_f64)  # 18.16: one ULP
        f32 = row.pop("f32")  # Float32's own shortest text: the same float32
        assert struct.pack("<f", f32) == struct.pack("<f", want["f32"]), (f32, want["f32"])
        assert row == {k: v for k, v in want.items() if k not in ("f32", "f64")}, (row, want)
    q = quarantined(clickhouse, "events_quarantine")
    assert set(q) == set(bad_events)
    for line, cols in bad_events.items():
        columns, reasons = q[line]
        assert columns == cols and len(reasons) == max(1, len(cols)) and all(reasons), (line, q[line])
