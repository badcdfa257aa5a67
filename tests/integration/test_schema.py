"""test_schema.py -- `ndingest schema NAME --datasets DIR [--clickhouse]`: the CREATE TABLE
statements it prints are taken by a real ClickHouse (18.16, tests/integration/clickhouse.py)
and give the CSV's columns and types in order, for the dataset and its quarantine; a
hand-written quarantine row loads with nothing rejected and reads back byte-exact; types the
server lacks are refused with FILE:LINE, and so are unknown datasets and bad definitions; a
literal DEFAULT's cell is the value the printed table's DEFAULT gives, and a DEFAULT string's
escapes are read as the server reads them."""
import subprocess

from conftest import BINARY
from clickhouse import STRICT_CSV, ClickHouseError

# Every type ClickHouse 18.16 can hold in a table, as the .datasource spells it, and as
# DESCRIBE TABLE gives it back (DateTime is declared in UTC: the cells carry no zone).
TYPES = [
    ("i8", "Int8", "Int8"), ("i16", "Int16", "Int16"), ("i32", "Int32", "Int32"),
    ("i64", "Int64", "Int64"), ("u8", "UInt8", "UInt8"), ("u16", "UInt16", "UInt16"),
    ("u32", "UInt32", "UInt32"), ("u64", "UInt64", "UInt64"),
    ("f32", "Float32", "Float32"), ("f64", "Float64", "Float64"),
    ("dec", "Decimal(18, 4)", "Decimal(18, 4)"), ("dec38", "Decimal(38,10)", "Decimal(38, 10)"),
    ("dec32", "Decimal32(2)", "Decimal(9, 2)"),
    ("s", "String", "String"), ("d", "Date", "Date"), ("dt", "DateTime", "DateTime('UTC')"),
    ("dtu", "DateTime('UTC')", "DateTime('UTC')"), ("u", "UUID", "UUID"),
    ("lc", "LowCardinality(String)", "LowCardinality(String)"),
    ("nlc", "LowCardinality(Nullable(String))", "LowCardinality(Nullable(String))"),
    ("ni", "Nullable(Int32)", "Nullable(Int32)"),
    ("ndt", "Nullable(DateTime)", "Nullable(DateTime('UTC'))"),
    ("ndec", "Nullable(Decimal(9, 2))", "Nullable(Decimal(9, 2))"),
    ("as", "Array(String)", "Array(String)"),
    ("an", "Array(Nullable(Int32))", "Array(Nullable(Int32))"),
    ("aa", "Array(Array(Int64))", "Array(Array(Int64))"),
    ("with space", "String", "String"),
]
# Types 18.16 lacks, refused by --clickhouse rather than mapped to one that reads the CSV
# differently (doc/datasets.md, section 7).
REFUSED = ["Bool", "DateTime64(3)", "Int128", "UInt256", "Date32", "Decimal(40, 2)"]
QUARANTINE = [("insertion_date", "DateTime('UTC')"), ("c__error_column", "Array(String)"),
              ("c__error", "Array(String)"), ("line", "String")]


def schema(tmp_path, name, text, *args):
    (tmp_path / f"{name}.datasource").write_text(text)
    return subprocess.run([str(BINARY), "schema", name, "--datasets", str(tmp_path), *args],
                          capture_output=True, timeout=30)


def definition(columns, extra=""):
    lines = ",\n".join(f"    `{n}` {t} `json:$.{n.replace(' ', '_')}`" for n, t in columns)
    return f"SCHEMA >\n{lines}\n{extra}"


def run_sql(clickhouse, sql):
    """Feeds the printed statements to the server one by one, as clickhouse-client
    --multiquery would: a SET applies to the statements after it."""
    settings = {}
    for statement in (s.strip() for s in sql.split(";\n")):
        if not statement:
            continue
        if statement.startswith("SET "):
            key, value = statement[4:].split("=")
            settings[key.strip()] = value.strip()
        else:
            clickhouse.query(statement, **settings)


def describe(clickhouse, table):
    return [(r["name"], r["type"]) for r in clickhouse.rows(f"DESCRIBE TABLE `{table}`")]


def test_every_type_creates_the_csv_columns_in_order(tmp_path, clickhouse):
    columns = [(n, t) for n, t, _ in TYPES] + [("zone", "LowCardinality(String)")]
    text = definition(columns).replace("`json:$.zone`", "`json:$.zone` DEFAULT 'unknown'")
    p = schema(tmp_path, "everything", text + 'ENGINE "MergeTree"\n'
               'ENGINE_SORTING_KEY "d, i32"\nENGINE_PARTITION_KEY "toYYYYMM(d)"\n', "--clickhouse")
    assert p.returncode == 0, p.stderr
    sql = p.stdout.decode()
    assert sql.startswith("SET allow_experimental_low_cardinality_type = 1;\n"), sql
    run_sql(clickhouse, sql)
    expected = [(n, ch) for n, _, ch in TYPES] + [("zone", "LowCardinality(String)")]
    assert describe(clickhouse, "everything") == expected
    assert describe(clickhouse, "everything_quarantine") == QUARANTINE
    info = clickhouse.rows("SELECT partition_key, sorting_key FROM system.tables "
                           "WHERE name = 'everything'")
    assert info == [{"partition_key": "toYYYYMM(d)", "sorting_key": "d, i32"}], info
    clickhouse.query("INSERT INTO everything (d) VALUES ('2024-02-29')")  # DEFAULT fills zone
    assert clickhouse.rows("SELECT zone FROM everything") == [{"zone": "unknown"}]


def test_no_sorting_key_and_no_low_cardinality(tmp_path, clickhouse):
    p = schema(tmp_path, "plain", definition([("a", "Int32"), ("b", "String")]), "--clickhouse")
    assert p.returncode == 0, p.stderr
    sql = p.stdout.decode()
    assert "SET " not in sql and "ORDER BY tuple()" in sql, sql
    run_sql(clickhouse, sql)
    assert describe(clickhouse, "plain") == [("a", "Int32"), ("b", "String")]


def csv_field(b):
    return b'"' + b.replace(b'"', b'""') + b'"'


def test_quarantine_row_loads_byte_exact(tmp_path, clickhouse):
    p = schema(tmp_path, "q", definition([("n", "Int32")]), "--clickhouse")
    assert p.returncode == 0, p.stderr
    run_sql(clickhouse, p.stdout.decode())
    # A refused line holding quotes, commas, a backslash, an apostrophe and invalid UTF-8;
    # the writer quotes it as one CSV field with " doubled (quarantine.h).
    line = b'{"n": "x,\\"y\\"", "o": \'z\', "bad": "\xff\xfe\xc3("}'
    reasons = b"['expected a number','it\\'s, \"odd\"']"  # ClickHouse's array literal
    row = b",".join([b"2024-02-29 23:59:59", csv_field(b"['n','o']"), csv_field(reasons),
                     csv_field(line)]) + b"\n"
    assert clickhouse.load_csv("q_quarantine", row) == 1
    back = clickhouse.rows("SELECT toString(insertion_date) AS at, c__error_column, c__error, "
                           "hex(line) AS hex FROM q_quarantine")
    assert back == [{"at": "2024-02-29 23:59:59", "c__error_column": ["n", "o"],
                     "c__error": ["expected a number", "it's, \"odd\""],
                     "hex": line.hex().upper()}], back
    assert STRICT_CSV["input_format_allow_errors_num"] == 0  # a rejected row fails the INSERT


def test_default_expressions_are_refused_for_this_server(tmp_path, clickhouse):
    """The writer leaves a DEFAULT expression's cell empty for the server to fill: this
    server cannot (no input_format_csv_empty_as_default), as shown here by loading such a
    cell into a table made by hand, so --clickhouse refuses the definition with FILE:LINE;
    a literal DEFAULT is fine."""
    clickhouse.create_table("by_hand", [("n", "UInt32"), ("at", "DateTime DEFAULT now()")])
    try:
        clickhouse.load_csv("by_hand", b"1,\n")
        loaded = clickhouse.rows("SELECT toUInt32(at) AS at FROM by_hand")
        assert loaded == [{"at": 0}], loaded  # read as 0, not now(): as bad as a refusal
    except ClickHouseError as e:
        assert e.code == 41, e  # cannot parse datetime
    p = schema(tmp_path, "expr", "SCHEMA >\n    n UInt32,\n    at DateTime DEFAULT now()\n",
               "--clickhouse")
    err = p.stderr.decode()
    assert p.returncode == 2 and p.stdout == b"", p
    assert "expr.datasource:3: column `at` DEFAULT now(): ClickHouse 18.16 cannot fill" in err, err
    p = schema(tmp_path, "lit", "SCHEMA >\n    n UInt32 DEFAULT 42,\n"
               "    at DateTime DEFAULT '2024-02-29 00:00:00'\n", "--clickhouse")
    assert p.returncode == 0 and b"DEFAULT 42" in p.stdout, p


def test_types_the_server_lacks_are_refused(tmp_path, clickhouse):
    lacking = clickhouse.unsupported(REFUSED)
    assert sorted(lacking) == sorted(REFUSED), lacking  # refused because the server lacks them
    for i, t in enumerate(REFUSED):
        p = schema(tmp_path, f"lacks{i}", definition([("a", "Int32"), ("b", t)]), "--clickhouse")
        err = p.stderr.decode()
        assert p.returncode == 2 and p.stdout == b"", (t, p)
        assert f"lacks{i}.datasource:3: column `b` {t}: ClickHouse 18.16 has no" in err, err
    # Without --clickhouse the same definitions describe fine: only the SQL needs 18.16.
    p = schema(tmp_path, "lacks0", definition([("a", "Int32"), ("b", "Bool")]))
    assert p.returncode == 0 and b"Bool" in p.stdout, p


def test_readable_table(tmp_path):
    text = ("SCHEMA >\n    `vendorid` UInt8 `json:$.vendorid`,\n"
            "    `zone` LowCardinality(String) `json:$.pickup.zone` DEFAULT 'unknown',\n"
            "    note Nullable(String)\n")
    p = schema(tmp_path, "taxi", text)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().splitlines() == [
        "column    type                    path           default",
        "vendorid  UInt8                   $.vendorid",
        "zone      LowCardinality(String)  $.pickup.zone  'unknown'",
        "note      Nullable(String)        $.note",
    ]


def test_unknown_dataset_and_bad_definition(tmp_path):
    p = subprocess.run([str(BINARY), "schema", "missing", "--datasets", str(tmp_path)],
                       capture_output=True, timeout=30)
    assert p.returncode == 2 and p.stdout == b""
    assert b"no dataset 'missing' in " in p.stderr, p.stderr
    p = schema(tmp_path, "bad", "SCHEMA >\n    a Int32,\n    b Frobnicate\n", "--clickhouse")
    assert p.returncode == 2 and p.stdout == b""
    assert f"{tmp_path}/bad.datasource:3: ".encode() in p.stderr, p.stderr
    for args in (["schema", "x"], ["schema", "--datasets", str(tmp_path)],
                 ["schema", "a", "b", "--datasets", str(tmp_path)], ["--clickhouse"],
                 ["convert", "--datasets", str(tmp_path)]):
        p = subprocess.run([str(BINARY), *args], capture_output=True, timeout=30)
        assert p.returncode == 2 and b"usage:" in p.stderr, (args, p.stderr)


def convert_missing(tmp_path, name, row=b'{"k": 1}\n'):
    """The row ndingest writes for a line that leaves every DEFAULT column out."""
    p = subprocess.run([str(BINARY), "convert", "--datasource", str(tmp_path / f"{name}.datasource")],
                       input=row, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout


# DEFAULT string escapes as written in the definition, each the body of a '...' literal.
ESCAPES = [r"\x41", r"\x4a\x4A", r"\xff", r"\0", r"\a", r"\b", r"\e", r"\f", r"\n", r"\r",
           r"\t", r"\v", r"\\", r"\'", "''", r"a\x20b", r"\x00\x7f"]


def test_default_string_escapes_as_the_server_reads_them(tmp_path, clickhouse):
    """Each escape's cell holds the bytes 18.16 reads from the same literal (SELECT of it
    as written is the reference), and the table --clickhouse prints gives them too; the
    escapes 18.16 reads in its own way (\\z as z, \\N as nothing) are refused."""
    columns = [f"    e{i} String DEFAULT '{e}'" for i, e in enumerate(ESCAPES)]
    columns.append("    every String DEFAULT '" + "".join(ESCAPES) + "'")
    (tmp_path / "esc.datasource").write_text("SCHEMA >\n    k Int8,\n" + ",\n".join(columns) + "\n")
    p = schema(tmp_path, "esc", (tmp_path / "esc.datasource").read_text(), "--clickhouse")
    assert p.returncode == 0, p.stderr
    run_sql(clickhouse, p.stdout.decode("utf-8", "surrogateescape"))  # \xff is printed raw
    assert clickhouse.load_csv("esc", convert_missing(tmp_path, "esc")) == 1
    clickhouse.query("INSERT INTO esc (k) VALUES (2)")  # the table's own DEFAULTs
    names = [f"e{i}" for i in range(len(ESCAPES))] + ["every"]
    literals = ESCAPES + ["".join(ESCAPES)]
    got = clickhouse.rows("SELECT k, " + ", ".join(f"hex({n}) AS {n}" for n in names)
                          + " FROM esc ORDER BY k")
    want = clickhouse.rows("SELECT " + ", ".join(f"hex('{e}') AS {n}"
                                                for n, e in zip(names, literals)))[0]
    assert want["e0"] == "41" and want["e6"] == "1B"  # the reference is the server's reading
    for row in got:
        assert {n: row[n] for n in names} == want, (row["k"], row, want)
    # \z and \N: 18.16 drops the backslash (current releases keep it for \z), \N is nothing.
    assert clickhouse.rows(r"SELECT hex('\z') AS z, hex('\N') AS n") == [{"z": "7A", "n": ""}]
    for bad in (r"\z", r"\N", r"\x4", r"\u0041"):
        p = schema(tmp_path, "bad", f"SCHEMA >\n    s String DEFAULT '{bad}'\n", "--clickhouse")
        assert p.returncode == 2 and p.stdout == b"", (bad, p)
        assert b"bad.datasource:2: column `s`: " in p.stderr, p.stderr


def test_default_literals_print_as_the_cells(tmp_path, clickhouse):
    """Each literal DEFAULT is printed in the form of the cell ndingest writes for it, which
    18.16 takes where the form as written is refused (a DateTime with an offset, a date only,
    Z, a fraction; a UUID without dashes; a nested array's []; a Nullable UUID) or read apart
    from the cell (a float, a long Decimal): the row loaded from the cells and the row the
    table's DEFAULTs fill are the same."""
    text = ("SCHEMA >\n    k Int8,\n"
            "    dt_offset DateTime DEFAULT '2024-01-05T01:02:03+02:00',\n"
            "    dt_date DateTime DEFAULT '2024-01-05',\n"
            "    dt_z DateTime DEFAULT '2024-01-05T01:02:03Z',\n"
            "    dt_frac DateTime DEFAULT '2024-01-05 01:02:03.750',\n"
            "    dt_all DateTime DEFAULT '2024-01-05T01:02:03.5-01:30',\n"
            "    d Date DEFAULT '2024-02-29',\n"
            "    u UUID DEFAULT '0123456789ABCDEF0123456789abcdef',\n"
            "    nu Nullable(UUID) DEFAULT 'FEDCBA9876543210fedcba9876543210',\n"
            "    f Float64 DEFAULT 1.36,\n"
            "    f32 Nullable(Float32) DEFAULT -1.5e-3,\n"
            "    dec Decimal(38, 10) DEFAULT 1234567890.1234567891,\n"
            "    dec_e Decimal(10, 2) DEFAULT 1.5e2,\n"
            "    i Int64 DEFAULT -9223372036854775808,\n"
            "    u64 UInt64 DEFAULT 18446744073709551615,\n"
            "    ni Nullable(Int32) DEFAULT NULL,\n"
            "    s String DEFAULT 'it''s \\\\ \"q\"\\n',\n"
            "    lc LowCardinality(Nullable(String)) DEFAULT 'a\\tb',\n"
            "    a Array(String) DEFAULT [],\n"
            "    aa Array(Array(Nullable(Int8))) DEFAULT []\n")
    p = schema(tmp_path, "lit", text, "--clickhouse")
    assert p.returncode == 0, p.stderr
    sql = p.stdout.decode()
    run_sql(clickhouse, sql)
    cells = convert_missing(tmp_path, "lit")
    assert clickhouse.load_csv("lit", cells) == 1, cells
    clickhouse.query("INSERT INTO lit (k) VALUES (2)")  # the table's own DEFAULTs
    loaded, filled = clickhouse.rows("SELECT * FROM lit ORDER BY k")
    assert loaded.pop("k") == 1 and filled.pop("k") == 2
    assert loaded == filled, (cells, sql)
    # What the cells say, read back (the reference for the canonical forms).
    assert loaded["dt_offset"] == "2024-01-04 23:02:03" and loaded["dt_all"] == "2024-01-05 02:32:03"
    assert loaded["u"] == "01234567-89ab-cdef-0123-456789abcdef", loaded
    assert loaded["s"] == "it's \\ \"q\"\n" and loaded["lc"] == "a\tb", loaded
