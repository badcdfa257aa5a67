"""test_deleted_files.py -- the day's files deleted (unlink, rm -rf) or renamed under a running
multi-worker server: no acknowledged row goes to a file without a name."""
import json
import os
import shutil
import socket

import pytest

from conftest import out_listing, today
from test_durability import post_concurrently, rows_body, rows_csv, sighup, wait_for

HEADER = b"vendorid,tpep_pickup_datetime,trip_distance,total_amount\n"


def write_in_every_worker(s, workers=2):
    """Posts on new connections until every worker has written both files (so each holds
    them open); returns the rows written."""
    seen, k = set(), 0
    while len(seen) < workers:
        assert k < 200, f"only workers {seen} answered"
        status, headers, _ = s.post(rows_body(900000 + k, 1) + b"x\n")
        assert status == 200
        seen.add(headers["X-Worker"])
        k += 1
    return sorted(rows_csv(900000, k).splitlines())


@pytest.mark.parametrize("how", ["unlink", "rm-rf"])
def test_deleted_files_are_made_again(start_server, tmp_path, how):
    out = tmp_path / "srv" / "out"
    out.parent.mkdir()  # the server's stderr log goes there, out of rm -rf's way
    s = start_server("--workers", "2", "--header", out_dir=out)
    csv = out / f"nyc_taxi-{today()}.csv"
    bad = out / f"nyc_taxi-{today()}.invalid.ndjson"
    write_in_every_worker(s)
    if how == "unlink":
        csv.unlink()
        bad.unlink()
    else:
        shutil.rmtree(out)
    # Both workers find the files gone in the same moment: one header, every row.
    expected = post_concurrently(s, 8, 10)
    assert csv.exists(), f"rows acknowledged after the {how} are in no file"
    data = csv.read_bytes()
    assert data.startswith(HEADER) and data.count(HEADER) == 1
    assert sorted(data[len(HEADER):].splitlines()) == expected
    assert bad.read_bytes() == b"x\n" * 80
    assert out_listing(out) == sorted([csv.name, bad.name])  # no temporaries


def test_renamed_files_keep_rows_until_sighup(start_server, tmp_path):
    s = start_server("--workers", "2", "--header")
    csv = s.out_dir / f"nyc_taxi-{today()}.csv"
    bad = s.out_dir / f"nyc_taxi-{today()}.invalid.ndjson"
    first = write_in_every_worker(s)
    moved_csv, moved_bad = tmp_path / "moved.csv", tmp_path / "moved.ndjson"
    os.rename(csv, moved_csv)
    os.rename(bad, moved_bad)
    # Still named, so still written: as documented, a rename needs SIGHUP.
    during = post_concurrently(s, 4, 10)
    assert not csv.exists() and not bad.exists()
    sighup(s, 2)
    after = post_concurrently(s, 4, 10, base=10000)
    data = moved_csv.read_bytes()
    assert data.startswith(HEADER) and data.count(HEADER) == 1
    assert sorted(data[len(HEADER):].splitlines()) == sorted(first + during)
    assert moved_bad.read_bytes() == b"x\n" * (len(first) + 40)
    data = csv.read_bytes()
    assert data.startswith(HEADER) and data.count(HEADER) == 1
    assert sorted(data[len(HEADER):].splitlines()) == after
    assert bad.read_bytes() == b"x\n" * 40


def test_file_deleted_between_batches_of_one_request(start_server):
    """A body of several 1 MiB batches, the day's file deleted after the first: a 200 must
    mean every row is in a file with a name."""
    s = start_server("--workers", "0")
    csv = s.out_dir / f"nyc_taxi-{today()}.csv"
    # ~1.5 MiB of rows per half: the first half fills (and writes) at least one 1 MiB batch.
    first, second = rows_body(0, 150000), rows_body(150000, 150000)
    body = first + second
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + first)
    wait_for(lambda: csv.exists() and csv.stat().st_size > 0, "the first batch written")
    csv.unlink()  # the operator's cleanup, while the request is still being read
    sock.sendall(second)
    resp = b""
    while b"\r\n\r\n" not in resp or not resp.endswith(b"}\n"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {resp!r}"
        resp += chunk
    sock.close()
    status = int(resp.split(b" ", 2)[1])
    assert status in (200, 500), resp
    if status == 500:  # refused: the client sends it again, nothing acknowledged was lost
        assert b"deleted" in resp, resp
        return
    valid = json.loads(resp.split(b"\r\n\r\n", 1)[1])["result"]["stats"]["records"]["valid"]
    in_files = sum(p.read_bytes().count(b"\n") for p in s.files("*.csv"))
    assert in_files == valid, f"200 for {valid} rows, but only {in_files} are in a file with a name"
