"""test_clickhouse_cells.py -- typed cells that the real ClickHouse 18.16 (the harness,
tests/integration/clickhouse.py) reads back as the values sent, where its readers go wrong:
floats in every spelling JSON allows (18.16 reads four characters of an exponent, scales the
mantissa by the exponent as written, turns a Float32 just under the halfway point past the
largest float into inf), and Date and DateTime past 18.16's range, which
`--clickhouse-compat 18.16` quarantines (doc/datasets.md, sections 3 and 7). The values
expected are computed here from the text sent (Python's correctly rounded float(), exact
fractions for Float32), never from what ndingest wrote."""
import csv
import io
import json
import math
import random
import struct
import subprocess
from decimal import Decimal
from fractions import Fraction

from conftest import BINARY
from test_schema import run_sql

DBL_MAX = 1.7976931348623157e308
FLT_MAX = struct.unpack("<f", bytes.fromhex("ffff7f7f"))[0]

# The values, then the edges of the form: zeros with any exponent, exponents with
# leading zeros and '+', mantissas scaled past 10^308 or below 10^-323 by their exponent, long
# mantissas, the top of the range.
FLOAT64 = [
    "0e400", "0.0e1000", "0e309", "-0e99999999999999999999", "1e00001", "1.5E+00002",
    "1e-00001", "1e00308", "1e0000000000000000308",
    "-0.000E-5", "1E+0", "-2.5E-0", "-2.5E+10", "12345e-2", "1.50e3", "100e0",
    "0.1e309", "0.0001e310", "-0.1e309",
    "0." + "0" * 399 + "1e405",           # 1e5 after 399 zeros: 18.16 read 0 * 10^405, nan
    "0." + "0" * 330 + "12345e340",       # 1.2345e9
    "1" + "0" * 300 + "e-330",            # 1e-30: 18.16 read 10^300 * 10^-330 as 0
    "123456789" + "0" * 291 + "e-320",    # 1.23456789e-12
    "1." + "0" * 29 + "1e5",
    "-98765432109876543210987654321.123456789" + "0" * 100 + "e-20",
    "1.7976931348623157e308", "1.7976931348623158e308", "-1.7976931348623158e308",
    "179769313486231580793e288", "2.2250738585072014e-308", "0.000022250738585072014e-303",
    "1e-00300", "9.999999999999999e307",
]

FLOAT32 = [
    "3.4028235677973366e38", "-3.4028235677973366e38",
    "3.40282356779733661637539395458142568447e38", "340282356779733661637539395458142568447",
    "0.34028235677973366e39", "340282346638528859811704183484516925440",
    "3.4028234663852886e38", "3.4028235e38", "3.4028234e38", "-3.4028235e+38",
    "0e400", "1e00001", "1.5E+00002", "1e00038", "0.1e39", "1.17549435e-38", "12345e-2",
]


def spellings(rng, x):
    """x (a finite nonzero double) spelled one of the ways JSON allows: its digits with the
    first digit's exponent, the exponent padded with zeros (and a '+'), the mantissa behind
    zeros, or the mantissa as an integer."""
    s = repr(x)
    neg, s = s.startswith("-"), s.lstrip("-")
    mant, _, exp = s.partition("e")
    ip, _, fp = mant.partition(".")
    digits = ip + fp
    lead = len(digits) - len(digits.lstrip("0"))
    d = digits.strip("0")
    e = int(exp or 0) + len(ip) - 1 - lead  # the first digit's exponent
    rest = d[1:] or "0"
    zeros = rng.randrange(0, 40)
    text = rng.choice([
        f"{d[0]}.{rest}e{e}",
        f"{d[0]}.{rest}e+{e:05d}" if e >= 0 else f"{d[0]}.{rest}E-{-e:06d}",
        f"0.{'0' * zeros}{d}e{e + 1 + zeros}",
        f"{d}e{e - len(d) + 1}",
    ])
    return ("-" if neg else "") + text


def f32_nearest(text):
    """The float32 nearest the decimal text (ties to even), inf past the halfway point."""
    v = Fraction(Decimal(text))
    if v == 0:
        return -0.0 if text.lstrip().startswith("-") else 0.0
    a = abs(v)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, -126)                      # subnormals share the smallest exponent
    q = a / Fraction(2) ** (e - 23)       # the significand, 2^23 <= q < 2^24 when normal
    m = q.numerator // q.denominator
    r = q - m
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and m % 2):
        m += 1
    x = math.ldexp(m, e - 23)
    if x > FLT_MAX:
        x = math.inf
    return -x if v < 0 else x


def bits(x, fmt):
    """The float's bits as an ordered integer (negatives below zero), for ULP distances."""
    size = "<q" if fmt == "<d" else "<i"
    i = struct.unpack(size, struct.pack(fmt, x))[0]
    return -(i & (0x7FFFFFFFFFFFFFFF if fmt == "<d" else 0x7FFFFFFF)) if i < 0 else i


def close(got, want, fmt):
    """Within the doc's one-ULP rule (18.16's reader is not correctly rounding), finite, and
    a zero with its sign."""
    if not math.isfinite(got) or not math.isfinite(want):
        return False
    if want == 0:
        return got == 0 and math.copysign(1, got) == math.copysign(1, want)
    return abs(bits(got, fmt) - bits(want, fmt)) <= 1


def convert(tmp_path, name, text, lines, *args):
    """ndingest convert --datasource on lines: (rows CSV, quarantine CSV, its exit code)."""
    datasets = tmp_path / "datasets"
    datasets.mkdir(exist_ok=True)
    (datasets / f"{name}.datasource").write_text(text)
    src = tmp_path / f"{name}.ndjson"
    src.write_bytes(b"\n".join(lines) + b"\n")
    quarantine = tmp_path / f"{name}.quarantine.csv"
    p = subprocess.run([str(BINARY), "convert", "--datasource", str(datasets / f"{name}.datasource"),
                        "--quarantine-file", str(quarantine), *args, str(src)],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout, quarantine.read_bytes(), datasets


def create(clickhouse, name, datasets, *args):
    p = subprocess.run([str(BINARY), "schema", name, "--datasets", str(datasets), "--clickhouse",
                        *args], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    run_sql(clickhouse, p.stdout.decode())
    return p.stderr.decode()


def float_lines(values):
    # the text goes into the JSON as it is: json.dumps would respell it
    return [b'{"id": %d, "f": %s, "n": %s, "a": [%s, 1, %s]}' % (i, v.encode(), v.encode(),
                                                                v.encode(), v.encode())
            for i, v in enumerate(values)]


def load_floats(tmp_path, clickhouse, name, ftype, values):
    text = (f"SCHEMA >\n    `id` UInt32 `json:$.id`,\n    `f` {ftype} `json:$.f`,\n"
            f"    `n` Nullable({ftype}) `json:$.n`,\n    `a` Array({ftype}) `json:$.a[:]`,\n"
            f"    `d` {ftype} `json:$.missing` DEFAULT 1.5E+00002,\n"
            f"    `z` {ftype} `json:$.missing` DEFAULT -0e400\n"
            "ENGINE_SORTING_KEY \"id\"\n")
    rows, quarantine, datasets = convert(tmp_path, name, text, float_lines(values))
    assert quarantine == b"", quarantine
    create(clickhouse, name, datasets)
    assert clickhouse.load_csv(name, rows) == len(values)
    back = clickhouse.rows(f"SELECT id, toString(f) AS f, toString(n) AS n,"
                           f" arrayMap(x -> toString(x), a) AS a, toString(d) AS d,"
                           f" toString(z) AS z FROM `{name}` ORDER BY id")
    assert [r["id"] for r in back] == list(range(len(values)))
    return rows, back


def test_float64_cells_read_back_as_sent(tmp_path, clickhouse):
    rng = random.Random(15)
    values = list(FLOAT64)
    while len(values) < len(FLOAT64) + 600:
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if math.isfinite(x) and abs(x) >= 2.2250738585072014e-308:  # 18.16 reads subnormals as 0
            values.append(spellings(rng, x))
    rows, back = load_floats(tmp_path, clickhouse, "f64", "Float64", values)
    wrong = []
    for text, row in zip(values, back):
        want = float(text)
        got = [float(row["f"]), float(row["n"]), float(row["a"][0]), float(row["a"][2])]
        if not all(close(g, want, "<d") for g in got) or row["a"][1] != "1":
            wrong.append((text[:60], want, row))
        assert row["d"] == "150" and row["z"] == "-0", row
    assert not wrong, (len(wrong), wrong[:10], rows[:400])


def test_float32_cells_read_back_as_sent(tmp_path, clickhouse):
    rng = random.Random(16)
    values = list(FLOAT32)
    while len(values) < len(FLOAT32) + 400:
        x = struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
        if math.isfinite(x) and abs(x) >= 1.1754943508222875e-38:
            values.append(spellings(rng, x))
    rows, back = load_floats(tmp_path, clickhouse, "f32", "Float32", values)
    wrong = []
    for text, row in zip(values, back):
        want = f32_nearest(text)
        # toString(Float32) is the shortest text of the float32: float() of it is exact
        got = [float(row["f"]), float(row["n"]), float(row["a"][0]), float(row["a"][2])]
        if not all(close(g, want, "<f") for g in got):
            wrong.append((text[:60], want, row))
        assert row["d"] == "150" and row["z"] == "-0", row
    assert not wrong, (len(wrong), wrong[:10], rows[:400])


WHEN = """SCHEMA >
    `id` UInt32 `json:$.id`,
    `d` Date `json:$.d`,
    `t` DateTime `json:$.t`,
    `n` Nullable(DateTime) `json:$.n`,
    `a` Array(Date) `json:$.a[:]`
ENGINE_SORTING_KEY "id"
"""

INSIDE = b'{"id": 1, "d": "2105-12-31", "t": "2105-12-31 23:59:59", "n": 4291747199, "a": ["2105-12-31"]}'
OUTSIDE = {
    b'{"id": 2, "d": "2106-01-01", "t": "2000-01-01 00:00:00", "n": 0, "a": []}':
        (["d"], ["out of range for Date (1970-01-01 to 2105-12-31)"]),
    b'{"id": 3, "d": "2000-01-01", "t": "2106-01-01 00:00:00", "n": 4291747200, "a": []}':
        (["t", "n"], ["out of range for DateTime (1970-01-01 to 2105-12-31 23:59:59)"] * 2),
    b'{"id": 4, "d": "2000-01-01", "t": 4294967295, "n": null, "a": ["2149-06-06"]}':
        (["t", "a"], ["out of range for DateTime (1970-01-01 to 2105-12-31 23:59:59)",
                      "out of range for Date (1970-01-01 to 2105-12-31)"]),
}


def test_dates_past_18_16_are_quarantined_with_the_option(tmp_path, clickhouse):
    lines = [INSIDE, *OUTSIDE]
    rows, quarantine, datasets = convert(tmp_path, "when_1816", WHEN, lines,
                                         "--clickhouse-compat", "18.16")
    # with the option schema has nothing to warn about
    assert create(clickhouse, "when_1816", datasets, "--clickhouse-compat", "18.16") == ""
    assert clickhouse.load_csv("when_1816", rows) == 1
    back = clickhouse.rows("SELECT id, toUInt16(d) AS d, toUInt32(t) AS t, toUInt32(n) AS n,"
                           " arrayMap(x -> toUInt16(x), a) AS a FROM when_1816")
    # days and seconds since the epoch of 2105-12-31 and 2105-12-31 23:59:59 UTC, exactly
    assert back == [{"id": 1, "d": 49672, "t": 4291747199, "n": 4291747199, "a": [49672]}]
    refused = {}
    for row in csv.reader(io.StringIO(quarantine.decode(), newline="")):
        refused[row[3].encode()] = (row[1], row[2])
    assert set(refused) == set(OUTSIDE)
    for line, (columns, reasons) in OUTSIDE.items():
        want_cols = "[" + ",".join(f"'{c}'" for c in columns) + "]"
        want_reasons = "[" + ",".join(f"'{r}'" for r in reasons) + "]"
        assert refused[line] == (want_cols, want_reasons), line


def test_dates_past_18_16_are_accepted_without_it(tmp_path, clickhouse):
    """Today's wider ranges stay the default (for current ClickHouse); 18.16 then loads the
    values past its range as 0, which is why schema --clickhouse warns."""
    lines = [INSIDE, *OUTSIDE]
    rows, quarantine, datasets = convert(tmp_path, "when_current", WHEN, lines)
    assert quarantine == b""
    warnings = create(clickhouse, "when_current", datasets)
    for column in ("d", "t", "n", "a"):
        assert f"column {column}: a " in warnings and "--clickhouse-compat 18.16" in warnings, warnings
    assert "column id" not in warnings
    assert clickhouse.load_csv("when_current", rows) == len(lines)
    back = {r["id"]: r for r in clickhouse.rows(
        "SELECT id, toUInt16(d) AS d, toUInt32(t) AS t FROM when_current")}
    assert back[1] == {"id": 1, "d": 49672, "t": 4291747199}
    assert back[2]["d"] == 0 and back[3]["t"] == 0  # 2106-01-01 in 18.16: silently zero


def test_serve_takes_the_option(tmp_path, start_server):
    """The server's workers check against the target stated at start."""
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "when.datasource").write_text(WHEN)
    srv = start_server("--workers", "1", "--datasets", str(datasets), "--utc",
                       "--clickhouse-compat", "18.16")
    body = b"\n".join([INSIDE, *OUTSIDE]) + b"\n"
    status, _, resp = srv.request("POST", "/v0/events?name=when&wait=true", body,
                                  {"Content-Type": "application/x-ndjson"})
    assert status == 200, resp
    assert json.loads(resp) == {"successful_rows": 1, "quarantined_rows": len(OUTSIDE)}
