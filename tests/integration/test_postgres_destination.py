"""test_postgres_destination.py -- src/delivery/postgres.c (and pg_cells.c, schema_pg.c)
against a real PostgreSQL 15 (tests/integration/postgres.py), through the test driver
build/tests/postgres_probe: every type's edge values written by `ndingest convert
--datasource`, COPY'd and read back, compared with values computed here in Python; refused
rows with their line; a missing table or column; a stopped server; authentication; and the
exactly-once machinery (the cursor row in the batch's transaction, a resent batch skipped,
an unknown COMMIT outcome read back).
"""
import datetime
import json
import math
import os
import struct
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import BINARY, ROOT
from postgres import PASSWORD, quote_ident

# NDINGEST_PROBE: another build of the driver (an ASan one); by default the Makefile's.
PROBE = Path(os.environ.get("NDINGEST_PROBE", ROOT / "build" / "tests" / "postgres_probe"))
UTC = datetime.timezone.utc


@pytest.fixture(scope="module", autouse=True)
def probe():
    if "NDINGEST_PROBE" in os.environ:
        assert PROBE.exists(), PROBE
        return
    r = subprocess.run(["make", "-s", "-C", str(ROOT), "build/tests/postgres_probe"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def run_probe(*args, env=None, check=True):
    e = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    e.update(env or {})
    r = subprocess.run([str(PROBE), *map(str, args)], capture_output=True, text=True, env=e,
                       timeout=120)
    if check:
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        return json.loads(r.stdout)
    return r


def send(pg, table, data, definition=None, columns=None, host="h1", dataset=None, url=None,
         **kw):
    args = [url or pg.url(), "send", host, dataset or table, table]
    args += ["--definition", definition] if definition else ["--columns", columns]
    args.append(data)
    for k, v in kw.items():
        args += ["--" + k.replace("_", "-"), v]
    return run_probe(*args)


def cursor(pg, dataset, host="h1"):
    return run_probe(pg.url(), "cursor", host, dataset)


# MARK: - Every type's edges

def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def ts(*a):
    return datetime.datetime(*a, tzinfo=UTC)


EPOCH = ts(1970, 1, 1)
HOSTILE = ["", '"', '""', "\\", "\\.", "\\N", "NULL", "null", "a,b", "line\nfeed",
           "cr\rlf\r\n", "{braces}", "{\"a\":1}", "it's", "tab\there", "café ☃ 𝄞",
           " padded ", "\x01ctrl", "[1,2]", "'single'"]

# (column, type, [(the JSON value's text, the value PostgreSQL must hold, in Python)])
COLUMNS = [
    ("i8", "Int8", [("-128", -128), ("127", 127), ("0", 0), ("-0", 0)]),
    ("u8", "UInt8", [("0", 0), ("255", 255)]),
    ("i16", "Int16", [("-32768", -32768), ("32767", 32767)]),
    ("u16", "UInt16", [("0", 0), ("65535", 65535)]),
    ("i32", "Int32", [("-2147483648", -2**31), ("2147483647", 2**31 - 1)]),
    ("u32", "UInt32", [("0", 0), ("4294967295", 2**32 - 1)]),
    ("i64", "Int64", [("-9223372036854775808", -2**63), ("9223372036854775807", 2**63 - 1)]),
    ("u64", "UInt64", [("0", 0), ("18446744073709551615", 2**64 - 1)]),
    ("i128", "Int128", [(str(-2**127), -2**127), (str(2**127 - 1), 2**127 - 1)]),
    ("u256", "UInt256", [(str(2**256 - 1), 2**256 - 1), ("0", 0)]),
    ("f32", "Float32", [("0.1", f32(0.1)), ("3.4028234e38", f32(3.4028234e38)),
                        ("1e-40", f32(1e-40)), ("1e-50", 0.0), ("-1.5", -1.5),
                        ("16777217", 16777216.0), ("-0", -0.0)]),
    ("f64", "Float64", [("1.7976931348623157e308", 1.7976931348623157e308),
                        ("5e-324", 5e-324), ("1e-400", 0.0), ("-2.5E-999", -0.0),
                        ("0.1", 0.1), ("-0.0", -0.0), ("123456789012345678", 1.2345678901234568e17),
                        ("1.36", 1.36)]),
    ("dec", "Decimal(18, 4)", [("-99999999999999.9999", Decimal("-99999999999999.9999")),
                               ("1.5e2", Decimal(150)), ("0.0001", Decimal("0.0001")),
                               ("1.50", Decimal("1.5"))]),
    ("dec76", "Decimal(76, 38)", [("-" + "9" * 38 + "." + "9" * 38,
                                   Decimal("-" + "9" * 38 + "." + "9" * 38)),
                                  ("1e-38", Decimal("1e-38"))]),
    ("s", "String", [(json.dumps(s), s) for s in HOSTILE]),
    ("ns", "Nullable(String)", [("null", None), ('""', ""), ('"\\\\N"', "\\N"),
                                ('"NULL"', "NULL")]),
    ("lc", "LowCardinality(String)", [('"x"', "x"), ('"\\\\."', "\\.")]),
    ("b", "Bool", [("true", True), ("false", False), ("1", True), ("0", False)]),
    ("d", "Date", [('"1970-01-01"', "1970-01-01"), ('"2149-06-06"', "2149-06-06"),
                   ('"2024-02-29"', "2024-02-29")]),
    ("d32", "Date32", [('"1900-01-01"', "1900-01-01"), ('"2299-12-31"', "2299-12-31")]),
    ("dt", "DateTime", [('"2024-03-01T00:00:00+01:00"', ts(2024, 2, 29, 23)), ("0", EPOCH),
                        ("4294967295", ts(2106, 2, 7, 6, 28, 15)),
                        ('"2024-01-05T01:02:03.999Z"', ts(2024, 1, 5, 1, 2, 3)),
                        ('"2000-02-29 12:00"', ts(2000, 2, 29, 12))]),
    ("dt6", "DateTime64(6)", [('"2299-12-31T23:59:59.999999Z"', ts(2299, 12, 31, 23, 59, 59, 999999)),
                              ("-1.5", ts(1969, 12, 31, 23, 59, 58, 500000)),
                              ('"1900-01-01 00:00:00"', ts(1900, 1, 1))]),
    ("dt3", "DateTime64(3, 'UTC')", [('"2024-01-05T01:02:03.2509Z"', ts(2024, 1, 5, 1, 2, 3, 250000)),
                                     ("1.001", ts(1970, 1, 1, 0, 0, 1, 1000))]),
    ("u", "UUID", [('"0123ABCD-0000-4000-8000-00000000FFFF"', "0123abcd-0000-4000-8000-00000000ffff"),
                   ('"ffffffffffffffffffffffffffffffff"', "ffffffff-ffff-ffff-ffff-ffffffffffff")]),
    ("ni", "Nullable(Int64)", [("null", None), ("-1", -1)]),
    ("nf", "Nullable(Float64)", [("null", None), ("2.5", 2.5)]),
    ("as", "Array(String)", [(json.dumps(HOSTILE), HOSTILE), ("[]", []), ("null", []),
                             (json.dumps(["NULL", None and 1 or "x"]), ["NULL", "x"])]),
    ("ai", "Array(Nullable(Int32))", [("[1,null,-2147483648]", [1, None, -2**31]), ("[null]", [None]),
                                      ("[]", [])]),
    ("aa", "Array(Array(Int16))", [("[[1,2],[3,4]]", [[1, 2], [3, 4]]), ("[]", []),
                                   ("[[-32768]]", [[-32768]])]),
    ("adt", "Array(DateTime)", [('["2024-03-01T00:00:00+01:00",0]', [ts(2024, 2, 29, 23), EPOCH])]),
    ("af", "Array(Float32)", [("[0.1,1e-50,-0]", [f32(0.1), 0.0, -0.0])]),
    ("ab", "Array(Bool)", [("[true,false,1]", [True, False, True])]),
    ("au", "Array(UUID)", [('["0123ABCD-0000-4000-8000-00000000FFFF"]',
                            ["0123abcd-0000-4000-8000-00000000ffff"])]),
]
NROWS = max(len(v) for _, _, v in COLUMNS)


def definition(name, columns):
    lines = [f"    `{c}` {t} `json:$.{c}`" for c, t in columns]
    return "SCHEMA >\n" + ",\n".join(lines) + "\n"


def same(col, typ, got, want):
    """got: row_to_json's value (numbers as text), want: the Python value."""
    if want is None or got is None:
        return got is None and want is None
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            same(col, typ, g, w) for g, w in zip(got, want))
    if isinstance(want, bool):
        return got is want
    if isinstance(want, int):
        return int(got) == want
    if isinstance(want, float):
        g = float(got)
        if "Float32" in typ:
            g = f32(g)
        return g == want and math.copysign(1, g) == math.copysign(1, want)
    if isinstance(want, Decimal):
        return Decimal(got) == want
    if isinstance(want, datetime.datetime):
        return datetime.datetime.fromisoformat(got) == want
    return got == want


def convert(tmp_path, name, columns, lines):
    """The day-file rows `ndingest convert --datasource` writes for lines; all accepted."""
    ds = tmp_path / f"{name}.datasource"
    ds.write_text(definition(name, columns))
    src = tmp_path / f"{name}.ndjson"
    src.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / f"{name}-2026-12-07.csv"
    q = tmp_path / f"{name}.quarantine.csv"
    with open(out, "wb") as f:
        r = subprocess.run([str(BINARY), "convert", "--datasource", ds, "--quarantine-file", q,
                            src], stdout=f, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0, r.stderr
    return ds, out, q


def create(pg, tmp_path, name):
    """The table by `ndingest schema NAME --postgres`, dropped first."""
    r = subprocess.run([str(BINARY), "schema", name, "--datasets", tmp_path, "--postgres"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    pg.psql(f"DROP TABLE IF EXISTS {quote_ident(name)}; " + r.stdout)
    forget(pg, name)


def forget(pg, dataset):
    """No cursor row for the dataset (an earlier test's table of the same name had one)."""
    pg.psql("DO $$ BEGIN IF to_regclass('ndingest_delivery') IS NOT NULL THEN "
            f"DELETE FROM ndingest_delivery WHERE dataset = '{dataset}'; END IF; END $$")


def test_every_type_edges_round_trip(postgres, tmp_path):
    columns = [("id", "UInt32")] + [(c, t) for c, t, _ in COLUMNS]
    lines = []
    for k in range(NROWS):
        cells = [f'"id":{k}'] + [f'"{c}":{v[k % len(v)][0]}' for c, _, v in COLUMNS]
        lines.append("{" + ",".join(cells) + "}")
    ds, data, q = convert(tmp_path, "edges", columns, lines)
    assert q.read_text().count("\n") <= 1, q.read_text()  # nothing quarantined
    create(postgres, tmp_path, "edges")
    out = send(postgres, "edges", data, definition=ds)
    assert out["result"] == "stored", out
    rows = postgres.query("SELECT * FROM edges ORDER BY id")
    assert len(rows) == NROWS
    bad = []
    for k, row in enumerate(rows):
        assert int(row["id"]) == k
        for c, t, v in COLUMNS:
            want = v[k % len(v)][1]
            if not same(c, t, row[c], want):
                bad.append(f"row {k} {c} {t}: sent {v[k % len(v)][0]}, got {row[c]!r}, "
                           f"expected {want!r}")
    assert not bad, "\n".join(bad)
    # the cursor row moved in the same transaction: the file and its end
    cur = cursor(postgres, "edges")
    assert (cur["found"], cur["file"], cur["offset"]) == (1, data.name, data.stat().st_size)


def test_datetime_is_utc_whatever_the_session_zone(postgres, tmp_path):
    """The server's TimeZone is Pacific/Chatham: a cell sent without +00 would be 13:45 off."""
    assert postgres.scalar("SHOW timezone") == "UTC"  # psql's PGTZ; the server's is not
    tz = postgres.psql("SELECT setting FROM pg_settings WHERE name = 'TimeZone'")
    ds, data, _ = convert(tmp_path, "tz", [("t", "DateTime")], ['{"t": 0}'])
    create(postgres, tmp_path, "tz")
    assert send(postgres, "tz", data, definition=ds)["result"] == "stored"
    assert postgres.scalar("SELECT extract(epoch FROM t)::bigint FROM tz") == "0", tz


def test_untyped_dataset_to_text_columns(postgres, tmp_path):
    """The classic dataset: cells as text, an empty cell (null, missing, "") as ''."""
    src = tmp_path / "in.ndjson"
    # (the value's JSON text, the text the column must hold): strings unescaped, the rest as sent
    values = [('"x"', "x"), ('""', ""), ('"\\\\."', "\\."), ('"a,\\"b\\""', 'a,"b"'),
              ('"l\\r\\nf"', "l\r\nf"), ('"\\\\N"', "\\N"), ("null", ""), ("12.50", "12.50"),
              ("true", "true"), ('{"k": [1, 2]}', '{"k": [1, 2]}'), ("-0.5e+10", "-0.5e+10")]
    lines = ['{"a": %d, "b": %s}' % (k, v) for k, (v, _) in enumerate(values)]
    lines.append('{"a": 99}')  # b missing
    src.write_text("\n".join(lines) + "\n")
    data = tmp_path / "classic-2026-12-07.csv"
    with open(data, "wb") as f:
        subprocess.run([str(BINARY), "convert", "--columns", "a,b", src], stdout=f, check=True)
    postgres.psql("DROP TABLE IF EXISTS classic; CREATE TABLE classic (a text, b text)")
    assert send(postgres, "classic", data, columns="a,b")["result"] == "stored"
    got = {int(r["a"]): r["b"] for r in postgres.query("SELECT * FROM classic")}
    want = {k: text for k, (_, text) in enumerate(values)}
    want[99] = ""
    assert got == want


# MARK: - Refusals and classification

def test_refused_row_reports_its_row_and_nothing_is_stored(postgres, tmp_path):
    """PostgreSQL refuses a value (a smallint column narrower than the definition's Int32):
    the outcome names the row (COPY's "line N" is row N - 1), nothing of the batch is stored,
    the cursor stays."""
    ds, data, _ = convert(tmp_path, "narrow", [("id", "UInt32"), ("v", "Int32")],
                          [json.dumps({"id": k, "v": 100000 if k == 3 else k}) for k in range(6)])
    postgres.psql("DROP TABLE IF EXISTS narrow; CREATE TABLE narrow (id bigint, v smallint)")
    out = send(postgres, "narrow", data, definition=ds)
    assert out["result"] == "refused" and out["refused_row"] == 3, out
    assert "22003" in out["message"] and "narrow" in out["message"], out
    assert postgres.scalar("SELECT count(*) FROM narrow") == "0"
    assert cursor(postgres, "narrow")["found"] == 0


def test_nul_in_a_string_is_refused_before_sending(postgres, tmp_path):
    ds, data, _ = convert(tmp_path, "nul", [("id", "UInt32"), ("s", "String")],
                          ['{"id": 0, "s": "ok"}', '{"id": 1, "s": "a\\u0000b"}'])
    create(postgres, tmp_path, "nul")
    out = send(postgres, "nul", data, definition=ds)
    assert out["result"] == "refused" and out["refused_row"] == 1, out
    assert "NUL" in out["message"] and '"s"' in out["message"], out
    assert postgres.scalar("SELECT count(*) FROM nul") == "0"


@pytest.mark.parametrize("bad", ["nul", "range"])
def test_refused_row_far_into_a_big_batch(postgres, tmp_path, bad):
    """The batch is converted and sent in pieces of about 256 KiB: the refused row's index
    counts from the batch's first row whichever piece it is in, for the converter's refusal
    (a NUL) and for PostgreSQL's (a value out of a smallint's range)."""
    n, at = 40000, 31234
    lines = [json.dumps({"id": k, "s": "x" * 20, "v": k % 30000}) for k in range(n)]
    lines[at] = json.dumps({"id": at, "s": "a\u0000" if bad == "nul" else "y", "v": 40000 if bad == "range" else 1})
    ds, data, _ = convert(tmp_path, "big", [("id", "UInt32"), ("s", "String"), ("v", "Int32")], lines)
    assert data.stat().st_size > 3 * 256 * 1024
    postgres.psql("DROP TABLE IF EXISTS big; CREATE TABLE big (id bigint, s text, v smallint)")
    forget(postgres, "big")
    out = send(postgres, "big", data, definition=ds)
    assert (out["result"], out["refused_row"]) == ("refused", at), out
    assert postgres.scalar("SELECT count(*) FROM big") == "0"
    assert cursor(postgres, "big")["offset"] == 0


def test_not_null_violation_is_refused_with_its_row(postgres, tmp_path):
    ds, data, _ = convert(tmp_path, "nn", [("id", "UInt32"), ("s", "Nullable(String)")],
                          ['{"id": 0, "s": "a"}', '{"id": 1}'])
    postgres.psql("DROP TABLE IF EXISTS nn; CREATE TABLE nn (id bigint, s text NOT NULL)")
    out = send(postgres, "nn", data, definition=ds)
    assert (out["result"], out["refused_row"]) == ("refused", 1), out
    assert "23502" in out["message"], out


def test_missing_table_or_column_is_table(postgres, tmp_path):
    ds, data, _ = convert(tmp_path, "absent", [("id", "UInt32")], ['{"id": 1}'])
    postgres.psql("DROP TABLE IF EXISTS absent")
    out = send(postgres, "absent", data, definition=ds)
    assert out["result"] == "table" and "42P01" in out["message"], out
    postgres.psql("CREATE TABLE absent (other int)")
    out = send(postgres, "absent", data, definition=ds)
    assert out["result"] == "table" and "42703" in out["message"], out
    postgres.psql("DROP TABLE absent; CREATE TABLE absent (id bigint)")
    assert send(postgres, "absent", data, definition=ds)["result"] == "stored"


def test_stopped_server_is_retry(postgres, tmp_path):
    ds, data, _ = convert(tmp_path, "down", [("id", "UInt32")], ['{"id": 1}'])
    create(postgres, tmp_path, "down")
    postgres.stop(mode="fast", remove=False)
    try:
        out = send(postgres, "down", data, definition=ds)
        assert out["result"] == "retry", out
    finally:
        postgres.start()
    assert send(postgres, "down", data, definition=ds)["result"] == "stored"
    assert postgres.scalar("SELECT count(*) FROM down") == "1"


def test_authentication(postgres, tmp_path):
    """The password comes from PGPASSFILE, never the URL; a wrong or missing one is config."""
    ds, data, _ = convert(tmp_path, "auth", [("id", "UInt32")], ['{"id": 1}'])
    create(postgres, tmp_path, "auth")
    postgres.psql("GRANT ALL ON auth, ndingest_delivery TO ingest")
    url = postgres.url(user="ingest")
    out = send(postgres, "auth", data, definition=ds, url=url)
    assert out["result"] == "config", out
    passfile = tmp_path / "pgpass"
    esc = PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    passfile.write_text(f"127.0.0.1:{postgres.port}:events:ingest:wrong\n")
    passfile.chmod(0o600)
    r = run_probe(url, "send", "h1", "auth", "auth", "--definition", ds, data,
                  env={"PGPASSFILE": str(passfile)})
    assert r["result"] == "config" and "password authentication failed" in r["message"], r
    passfile.write_text(f"127.0.0.1:{postgres.port}:events:ingest:{esc}\n")
    r = run_probe(url, "send", "h1", "auth", "auth", "--definition", ds, data,
                  env={"PGPASSFILE": str(passfile)})
    assert r["result"] == "stored", r
    # a password in the URL (argv) is refused, and not repeated
    bad = f"postgresql://ingest:hunter2pw@127.0.0.1:{postgres.port}/events"
    r = run_probe(bad, "cursor", "h1", "auth", check=False)
    assert r.returncode == 1 and "password" in r.stdout and "hunter2pw" not in r.stdout, r.stdout
    r = run_probe(postgres.url(user="ingest", password="hunter2pw"), "cursor", "h1", "auth",
                  check=False)
    assert r.returncode == 1 and "hunter2pw" not in r.stdout, r.stdout


def test_no_database_is_config(postgres, tmp_path):
    r = run_probe(postgres.url(db="nosuchdb"), "cursor", "h1", "x")
    assert r["result"] == "config" and "nosuchdb" in r["message"], r


def test_sslmode_require_against_a_server_without_tls_is_config(postgres):
    """TLS is asked by the URL; a server that has none is refused, not silently plain."""
    r = run_probe(postgres.url(sslmode="require"), "cursor", "h1", "x")
    assert r["result"] == "config" and "SSL" in r["message"], r
    r = run_probe(postgres.url(), "cursor", "h1", "x", env={"PGSSLMODE": "require"})
    assert r["result"] == "config", r


# MARK: - Exactly once: the cursor row in the batch's transaction

def rows_file(tmp_path, name, ids):
    return convert(tmp_path, name, [("id", "UInt32")], [json.dumps({"id": i}) for i in ids])


def counts(pg, table):
    return pg.psql(f"SELECT count(*), count(DISTINCT id) FROM {quote_ident(table)}")[0]


def test_resent_batch_is_skipped_and_batches_advance(postgres, tmp_path):
    ds, data, _ = rows_file(tmp_path, "once", range(10))
    create(postgres, tmp_path, "once")
    body = data.read_bytes()
    mid = body.index(b"\n", len(body) // 2) + 1
    a = send(postgres, "once", data, definition=ds, start=0, end=mid)
    assert a["result"] == "stored"
    assert cursor(postgres, "once")["offset"] == mid
    again = send(postgres, "once", data, definition=ds, start=0, end=mid)
    assert again["result"] == "stored", again
    assert counts(postgres, "once") == [str(body[:mid].count(b"\n"))] * 2
    b = send(postgres, "once", data, definition=ds, start=mid, end=len(body))
    assert b["result"] == "stored"
    assert counts(postgres, "once") == ["10", "10"]
    # a batch overlapping the cursor is refused (the loop must start from the cursor)
    half = body.index(b"\n", mid // 2) + 1
    postgres.psql("UPDATE ndingest_delivery SET \"offset\" = " + str(half) +
                  " WHERE dataset = 'once'")
    o = send(postgres, "once", data, definition=ds, start=0, end=mid)
    assert o["result"] == "config" and "overlaps" in o["message"], o
    # another host has a cursor of its own
    assert send(postgres, "once", data, definition=ds, host="h2")["result"] == "stored"
    assert counts(postgres, "once") == ["20", "10"]


def test_skip_moves_the_cursor_forward_only(postgres, tmp_path):
    url = postgres.url()
    assert run_probe(url, "skip", "h1", "sk", "sk-2026-12-07.csv", 100)["result"] == "stored"
    assert run_probe(url, "skip", "h1", "sk", "sk-2026-12-07.csv", 50)["result"] == "stored"
    c = cursor(postgres, "sk")
    assert (c["file"], c["offset"]) == ("sk-2026-12-07.csv", 100)
    run_probe(url, "skip", "h1", "sk", "sk-2026-12-08.csv", 0)
    run_probe(url, "skip", "h1", "sk", "sk-2026-12-07.csv", 900)
    c = cursor(postgres, "sk")
    assert (c["file"], c["offset"]) == ("sk-2026-12-08.csv", 0)


def test_commit_answer_lost_is_read_back_as_stored(postgres, tmp_path):
    """The connection is cut after COMMIT reached the server: the outcome is unknown to the
    client, which reconnects, reads the cursor row, and finds the batch stored."""
    ds, data, _ = rows_file(tmp_path, "lost", range(5))
    create(postgres, tmp_path, "lost")
    out = send(postgres, "lost", data, definition=ds, fault="cut-after-commit")
    assert out["result"] == "stored", out
    assert "COMMIT" not in out["message"], out  # stored as read back, nothing left to say
    assert counts(postgres, "lost") == ["5", "5"]
    # and a resend after it adds nothing
    assert send(postgres, "lost", data, definition=ds)["result"] == "stored"
    assert counts(postgres, "lost") == ["5", "5"]


def test_commit_never_sent_is_read_back_as_not_stored(postgres, tmp_path):
    ds, data, _ = rows_file(tmp_path, "nocommit", range(5))
    create(postgres, tmp_path, "nocommit")
    out = send(postgres, "nocommit", data, definition=ds, fault="cut-before-commit")
    assert out["result"] == "retry" and "did not happen" in out["message"], out
    assert counts(postgres, "nocommit") == ["0", "0"]
    assert cursor(postgres, "nocommit")["found"] in (0, 1)
    assert cursor(postgres, "nocommit")["offset"] == 0
    assert send(postgres, "nocommit", data, definition=ds)["result"] == "stored"
    assert counts(postgres, "nocommit") == ["5", "5"]


@pytest.mark.parametrize("fault", ["kill-before-commit", "kill-after-commit"])
def test_killed_delivery_process_then_resend_is_once(postgres, tmp_path, fault):
    ds, data, _ = rows_file(tmp_path, "killed", range(7))
    create(postgres, tmp_path, "killed")
    r = send_raw = run_probe(postgres.url(), "send", "h1", "killed", "killed", "--definition", ds,
                             data, "--fault", fault, check=False)
    assert r.returncode == -9, (r.returncode, r.stdout, r.stderr)
    before = counts(postgres, "killed")
    assert before == (["0", "0"] if fault == "kill-before-commit" else ["7", "7"]), send_raw
    assert send(postgres, "killed", data, definition=ds)["result"] == "stored"
    assert counts(postgres, "killed") == ["7", "7"]


@pytest.mark.parametrize("how", ["terminate", "crash"])
def test_backend_gone_before_commit_is_retry_then_once(postgres, tmp_path, how):
    """pg_terminate_backend on the delivery connection, or `pg_ctl stop -m immediate` and a
    restart, while the batch's transaction is open: retry, nothing stored, then once."""
    ds, data, _ = rows_file(tmp_path, "term", range(9))
    create(postgres, tmp_path, "term")
    e = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    p = subprocess.Popen([str(PROBE), postgres.url(), "send", "h1", "term", "term",
                          "--definition", str(ds), str(data), "--fault", "pause-before-commit"],
                         stdout=subprocess.PIPE, text=True, env=e)
    time.sleep(1.0)
    if how == "terminate":
        assert postgres.terminate() >= 1
    else:
        postgres.restart()
    out = json.loads(p.communicate(timeout=60)[0])
    assert out["result"] == "retry", out
    assert counts(postgres, "term") == ["0", "0"]
    assert send(postgres, "term", data, definition=ds)["result"] == "stored"
    assert counts(postgres, "term") == ["9", "9"]


# MARK: - ndingest schema NAME --postgres

# The mapping the issue asks for, as PostgreSQL names the column's type (format_type) and
# whether it is NOT NULL.
SCHEMA_TYPES = [
    ("UInt64", "numeric(20,0)", True), ("UInt32", "bigint", True), ("UInt16", "integer", True),
    ("UInt8", "smallint", True), ("Int8", "smallint", True), ("Int16", "smallint", True),
    ("Int32", "integer", True), ("Int64", "bigint", True), ("Int128", "numeric(39,0)", True),
    ("UInt256", "numeric(78,0)", True), ("Float32", "real", True),
    ("Float64", "double precision", True), ("Decimal(10, 2)", "numeric(10,2)", True),
    ("Decimal64(4)", "numeric(18,4)", True), ("String", "text", True),
    ("LowCardinality(String)", "text", True), ("Nullable(String)", "text", False),
    ("LowCardinality(Nullable(String))", "text", False), ("Bool", "boolean", True),
    ("Date", "date", True), ("Date32", "date", True),
    ("DateTime", "timestamp with time zone", True),
    ("DateTime64(3)", "timestamp(3) with time zone", True), ("UUID", "uuid", True),
    ("Nullable(Int64)", "bigint", False), ("Array(String)", "text[]", True),
    ("Array(Nullable(Int32))", "integer[]", True), ("Array(Array(UInt64))", "numeric(20,0)[]", True),
]


def test_schema_postgres_creates_the_mapped_table(postgres, tmp_path):
    cols = [(f"c{i}", t) for i, (t, _, _) in enumerate(SCHEMA_TYPES)]
    (tmp_path / "mapped.datasource").write_text(definition("mapped", cols))
    postgres.psql("DROP TABLE IF EXISTS mapped")
    create(postgres, tmp_path, "mapped")
    got = postgres.psql("SELECT attname, format_type(atttypid, atttypmod), attnotnull "
                        "FROM pg_attribute WHERE attrelid = 'mapped'::regclass AND attnum > 0 "
                        "ORDER BY attnum")
    want = [[f"c{i}", pg, "t" if notnull else "f"] for i, (_, pg, notnull) in enumerate(SCHEMA_TYPES)]
    assert got == want
    assert postgres.scalar("SELECT to_regclass('ndingest_delivery') IS NOT NULL") == "t"


@pytest.mark.parametrize("column, why", [
    ("`t` DateTime64(9) `json:$.t`", "microseconds"),
    ("`t` DateTime DEFAULT now() `json:$.t`", "DEFAULT now()"),
    ("`a` Array(Array(Array(Array(Array(Array(Array(Int8))))))) `json:$.a`", "6 dimensions"),
])
def test_schema_postgres_refuses_what_it_cannot_hold(tmp_path, column, why):
    (tmp_path / "bad.datasource").write_text(f"SCHEMA >\n    `id` Int8 `json:$.id`,\n    {column}\n")
    r = subprocess.run([str(BINARY), "schema", "bad", "--datasets", tmp_path, "--postgres"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "", r
    assert f"{tmp_path}/bad.datasource:3: column" in r.stderr and why in r.stderr, r.stderr


def test_two_deliverers_of_one_batch_store_it_once(postgres, tmp_path):
    """Two processes send the same batch at once (a restarted delivery beside a stale one):
    the first holds the locked cursor row until its COMMIT; the second waits on it, then
    finds the batch in and stores nothing."""
    ds, data, _ = rows_file(tmp_path, "twice", range(11))
    create(postgres, tmp_path, "twice")
    e = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    args = [str(PROBE), postgres.url(), "send", "h1", "twice", "twice", "--definition", str(ds),
            str(data)]
    first = subprocess.Popen(args + ["--fault", "pause-before-commit"], stdout=subprocess.PIPE,
                             text=True, env=e)
    time.sleep(1.0)
    t = time.monotonic()
    second = subprocess.run(args, capture_output=True, text=True, env=e, timeout=60)
    waited = time.monotonic() - t
    assert json.loads(first.communicate(timeout=60)[0])["result"] == "stored"
    assert json.loads(second.stdout)["result"] == "stored", second.stdout
    assert waited > 1.0, waited  # it waited for the first's COMMIT
    assert counts(postgres, "twice") == ["11", "11"]
