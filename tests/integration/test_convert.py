"""test_convert.py -- `ndingest convert`: files and stdin to CSV on stdout, stats on stderr,
exit codes, and the same CSV as the server for the same input."""
import json
import os
import subprocess
import time

import pytest

from conftest import BINARY, ROOT, ok_response, today
import contract
from test_format import CELL_BODY, CELL_COLUMNS, INVALID_LINES, VALID_LINES

GEN = ROOT / "scripts" / "gen-taxi"


def convert(*args, stdin=None, timeout=120):
    p = subprocess.run([str(BINARY), "convert", *map(str, args)], input=stdin,
                       capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def stats_line(stderr):
    lines = stderr.splitlines(keepends=True)
    assert lines, "no stats line on stderr"
    return lines[-1]


def check_error(err, *words):
    """The stats line of a failed run: status "error", its message (with words) and counts."""
    line = stats_line(err)
    result = json.loads(line)["result"]
    assert result["status"] == "error", line
    assert result["error"] and all(w.encode() in result["error"].encode() for w in words), line
    assert set(result["stats"]["records"]) == {"valid", "invalid", "total"}
    return result


def check_ok(rc, out, err, body, columns=contract.DEFAULT_COLUMNS, crlf=False, max_line=1 << 20):
    rows, _, valid, invalid = contract.expected(body, columns, crlf, max_line)
    assert rc == 0, err
    assert out == rows
    assert err == ok_response(len(body), valid, invalid)


def test_file(taxi_body):
    check_ok(*convert(ROOT / "data" / "nyc_taxi.ndjson"), taxi_body)


def test_stdin(taxi_body):
    check_ok(*convert(stdin=taxi_body), taxi_body)


def test_dash_is_stdin(tmp_path, taxi_body):
    f = tmp_path / "a.ndjson"
    f.write_bytes(b'{"vendorid":"file"}\n')
    rc, out, err = convert(f, "-", stdin=taxi_body)
    assert rc == 0, err
    assert out == b"file,,,\n" + contract.expected(taxi_body)[0]
    assert err == ok_response(len(taxi_body) + 20, 1601, 0)


def test_many_files_each_final_line_counts(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b'{"vendorid":1}\nbad\n{"vendorid":2}')     # no final \n
    b.write_bytes(b'{"vendorid":3}\r\n\n')
    c.write_bytes(b"")
    rc, out, err = convert(a, b, c)
    assert rc == 0, err
    assert out == b"1,,,\n2,,,\n3,,,\n"
    assert err == ok_response(a.stat().st_size + b.stat().st_size, 3, 1)


def test_empty_stdin():
    assert convert(stdin=b"") == (0, b"", ok_response(0, 0, 0))


def test_options(tmp_path):
    f = tmp_path / "cells.ndjson"
    f.write_bytes(CELL_BODY)
    rc, out, err = convert("--columns", ",".join(CELL_COLUMNS), "--header", "--crlf", f)
    rows, _, valid, invalid = contract.expected(CELL_BODY, CELL_COLUMNS, crlf=True)
    assert rc == 0, err
    assert out == contract.header_row(CELL_COLUMNS, crlf=True) + rows
    assert err == ok_response(len(CELL_BODY), valid, invalid)


def test_header_with_no_input():
    rc, out, err = convert("--header", stdin=b"")
    assert rc == 0
    assert out == b"vendorid,tpep_pickup_datetime,trip_distance,total_amount\n"


def test_invalid_lines_counted_not_written():
    body = b"".join(l + b"\n" for l in VALID_LINES + INVALID_LINES)
    rc, out, err = convert("--columns", "vendorid,a", stdin=body)
    check_ok(rc, out, err, body, ["vendorid", "a"])
    valid, invalid = len(VALID_LINES), len(INVALID_LINES)
    assert err == ok_response(len(body), valid, invalid)


def test_max_line():
    long = b'{"vendorid":"' + b"x" * 3000 + b'"}'
    body = b'{"vendorid":1}\n' + long + b"\n" + b'{"vendorid":2}\n'
    rc, out, err = convert("--max-line", "2K", stdin=body)
    assert rc == 0, err
    assert out == b"1,,,\n2,,,\n"
    assert stats_line(err) == ok_response(len(body), 2, 1)
    assert str(len(long)).encode() in err


def test_multi_megabyte_input_crosses_reads(tmp_path):
    """Several MiB, so lines straddle convert's reads."""
    f = tmp_path / "big.ndjson"
    with open(f, "wb") as out:
        subprocess.run(["/usr/bin/python3", str(GEN), "--lines", "12000", "--seed", "5"],
                       stdout=out, check=True, timeout=60)
    body = f.read_bytes()
    assert len(body) > 4 << 20
    check_ok(*convert(f), body)


def test_slow_pipe_in_pieces(taxi_body):
    """stdin arriving in small pieces: partial lines are joined across reads. (The output
    of 40 KB of input is a few KB, well under a pipe's buffer, so writing first is safe.)"""
    body = taxi_body[:40000]
    p = subprocess.Popen([str(BINARY), "convert"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for i in range(0, len(body), 997):
            p.stdin.write(body[i:i + 997])
            p.stdin.flush()
            time.sleep(0.002)
        p.stdin.close()
        out, err = p.stdout.read(), p.stderr.read()
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    check_ok(rc, out, err, body)


# -- exit codes --------------------------------------------------------------------------

def test_missing_file_exits_2(tmp_path):
    missing = tmp_path / "nope.ndjson"
    rc, out, err = convert(missing)
    assert rc == 2
    assert out == b""
    assert str(missing).encode() in err
    check_error(err, str(missing), "No such file")


def test_missing_file_among_good_ones_exits_2(tmp_path):
    good = tmp_path / "good.ndjson"
    good.write_bytes(b'{"vendorid":1}\n')
    rc, out, err = convert(good, tmp_path / "nope.ndjson")
    assert rc == 2
    assert b"nope.ndjson" in err
    assert out == b"1,,,\n"  # the good file is still converted, and counted
    assert check_error(err, "nope.ndjson")["stats"]["records"]["valid"] == 1


def test_directory_exits_2(tmp_path):
    rc, _, err = convert(tmp_path)
    assert rc == 2, err
    check_error(err, str(tmp_path))


@pytest.mark.parametrize("args", [["--bogus"], ["--max-line"], ["--max-line", "abc"],
                                  ["--max-line", "12Q"], ["--columns", ""],
                                  ["--columns", "a,,b"], ["--columns", "a,a"],
                                  ["--listen", "127.0.0.1:1"], ["--workers", "2"]])
def test_bad_option_exits_2(args):
    rc, out, err = convert(*args, stdin=b'{"vendorid":1}\n')
    assert rc == 2, (args, out, err)
    assert out == b""
    assert err.strip(), "a usage error says what is wrong"


def test_help_exits_0():
    rc, out, err = convert("--help")
    assert rc == 0
    assert b"convert" in out + err


def test_full_stdout_is_an_error(tmp_path):
    """Writing to /dev/full fails: exit 2, not 0."""
    with open("/dev/full", "wb") as full:
        p = subprocess.run([str(BINARY), "convert"], input=b'{"vendorid":1}\n' * 100000,
                           stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 2, p.stderr
    check_error(p.stderr, "<stdout>", "No space left")


def big_copy(path, taxi_body, copies=50):
    """copies of the sample records in one file (29 MB: two of convert's mapped windows)."""
    with open(path, "wb") as f:
        for _ in range(copies):
            f.write(taxi_body)
    return contract.expected(taxi_body)[0] * copies


@pytest.mark.parametrize("keep", [1000, 12345678, -100], ids=["to-1000", "past-reader", "last-page"])
def test_file_truncated_while_read_exits_2(tmp_path, taxi_body, keep):
    """Truncated under convert: exit 2 with a message, not SIGBUS; stdout holds whole rows.
    Deterministic: convert's first 1 MiB of rows fills the 64 KiB pipe, so it waits there
    (about 6 MB into the input) until the file has been cut. "last-page" keeps all but the
    last 100 bytes, which the mapping then reads as zeros instead of faulting."""
    f = tmp_path / "big.ndjson"
    rows = big_copy(f, taxi_body)
    size = f.stat().st_size
    for attempt in range(3):
        p = subprocess.Popen([str(BINARY), "convert", str(f)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            first = p.stdout.read(4096)
            assert first, "convert wrote nothing"
            os.truncate(f, keep if keep > 0 else size + keep)
            rest, err = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        out = first + rest
        assert p.returncode == 2, (attempt, p.returncode, err[-300:])
        assert b"truncated" in err and str(f).encode() in err, err
        check_error(err, str(f), "truncated")
        assert out.endswith(b"\n") and rows.startswith(out), (attempt, len(out))
        assert len(out) < len(rows)
        big_copy(f, taxi_body)  # whole again for the next attempt


# -- the same CSV as the server ----------------------------------------------------------

MIXED = CELL_BODY + b"".join(l + b"\r\n" for l in VALID_LINES + INVALID_LINES) + b'{"id":"end"}'


@pytest.mark.parametrize("opts,body", [
    ([], None),
    (["--crlf"], None),
    (["--columns", ",".join(CELL_COLUMNS)], MIXED),
    (["--columns", ",".join(CELL_COLUMNS), "--crlf", "--header"], MIXED),
    (["--max-line", "366"], None),
], ids=["default", "crlf", "cells", "cells-crlf-header", "max-line"])
def test_same_csv_as_server(start_server, taxi_body, opts, body):
    body = taxi_body if body is None else body
    rc, out, err = convert(*opts, stdin=body)
    assert rc == 0, err
    s = start_server("--workers", "1", *opts)
    status, _, resp = s.post(body)
    assert status == 200
    assert resp == stats_line(err)
    path = s.out_dir / f"nyc_taxi-{today()}.csv"
    assert (path.read_bytes() if path.exists() else b"") == out
    # and both agree with the model
    cols = opts[opts.index("--columns") + 1].split(",") if "--columns" in opts else contract.DEFAULT_COLUMNS
    max_line = 366 if "--max-line" in opts else 1 << 20
    rows = contract.expected(body, cols, "--crlf" in opts, max_line)[0]
    if "--header" in opts:
        rows = contract.header_row(cols, "--crlf" in opts) + rows
    assert out == rows
    if "--max-line" in opts:  # the cut-off splits the body into both kinds
        assert 0 < out.count(b"\n") < body.count(b"\n")


def test_events_shape_is_the_nested_benchmark_file(tmp_path):
    """gen-taxi --shape events (bench-engine --paths's file): valid NDJSON whose nested paths
    are there on every line, converted like any other file with top-level columns."""
    p = subprocess.run(["/usr/bin/python3", str(GEN), "--shape", "events", "--bytes", "200K",
                        "--seed", "3"], capture_output=True, check=True, timeout=60)
    body = p.stdout
    lines = body.splitlines()
    assert len(lines) > 300
    for line in lines:
        ev = json.loads(line)
        assert isinstance(ev["user"]["geo"]["zone"], int)
        assert isinstance(ev["trip"]["fare"]["total"], (int, float))
        assert isinstance(ev["trip"]["dropoff"]["at"], int)
        assert ev["items"][0]["sku"] == "fare" and ev["items"][0]["qty"] == 1
        assert isinstance(ev["device"]["app"]["channel"], str) and ev["tags"]
    f = tmp_path / "events.ndjson"
    f.write_bytes(body)
    columns = ["ts", "vendorid", "total_amount", "passenger_count", "session_id", "event"]
    check_ok(*convert("--columns", ",".join(columns), f), body, columns=columns)


def test_heavy_shape_is_the_heavy_benchmark_file(tmp_path):
    """gen-taxi --shape heavy (issue #19's file): every line valid JSON (Python's json), of
    the sizes, key counts, nesting, arrays of objects and escapes the shape promises, the
    same bytes for the same seed; converted to the CSV of its four columns, byte for byte
    the same under every dispatch path."""
    def gen(seed):
        return subprocess.run(["/usr/bin/python3", str(GEN), "--shape", "heavy", "--bytes", "400K",
                               "--seed", str(seed)], capture_output=True, check=True,
                              timeout=60).stdout
    body = gen(3)
    assert body == gen(3) and body != gen(4)
    lines = body.splitlines()
    assert len(lines) > 50

    def keys(o, depth, acc):
        if isinstance(o, dict):
            for v in o.values():
                acc.append(depth)
                keys(v, depth + 1, acc)
        elif isinstance(o, list):
            for v in o:
                keys(v, depth + 1, acc)
        return acc
    for line in lines:
        assert 2048 <= len(line) <= 7168, len(line)
        ev = json.loads(line)
        depths = keys(ev, 1, [])
        assert len(depths) >= 100
        assert 0.4 <= sum(d > 1 for d in depths) / len(depths) <= 0.7
        assert isinstance(ev["user"]["profile"]["colors"]["sidebar"]["border"], str)  # depth 4
        assert all(isinstance(h, dict) for h in ev["entities"]["hashtags"] + ev["entities"]["user_mentions"])
        assert isinstance(ev["id"], int) and isinstance(ev["text"], str) and ev["lang"]
        raw = line[line.index(b'"text":'):line.index(b'"source":')]
        assert len(raw) > 100
    for esc in (rb"\n", rb"\"", rb"\/", rb"\u30bf", rb"\ud83d\ude95"):
        assert esc in body, esc
    text = b"".join(line[line.index(b'"text":'):line.index(b'"source":')] for line in lines)
    assert rb"\u" in text and rb"\n" in text and "東".encode() in text and "🚕".encode() in text
    f = tmp_path / "heavy.ndjson"
    f.write_bytes(body)
    columns = ["id", "created_at", "lang", "text"]
    check_ok(*convert("--columns", ",".join(columns), f), body, columns=columns)
    outs = set()
    for path in ("scalar", "sse2", "avx2", "avx512"):
        p = subprocess.run([str(BINARY), "convert", "--columns", ",".join(columns), str(f)],
                           capture_output=True, timeout=60, env=dict(os.environ, NDINGEST_SIMD=path))
        assert p.returncode == 0, p.stderr
        outs.add(p.stdout)
    assert len(outs) == 1
