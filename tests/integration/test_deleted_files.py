"""test_deleted_files.py -- the day's files deleted (unlink, rm -rf) or renamed under a running
multi-worker server: no acknowledged row goes to a file without a name."""
import os
import shutil

import pytest

from conftest import today
from test_durability import post_concurrently, rows_body, rows_csv, sighup

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
    assert sorted(p.name for p in out.iterdir()) == sorted([csv.name, bad.name])  # no temporaries


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
