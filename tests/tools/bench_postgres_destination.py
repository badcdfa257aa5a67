#!/usr/bin/env python3
"""bench_postgres_destination.py -- the PostgreSQL destination's throughput against the
yardstick, `psql -c '\\copy t FROM file CSV'` of the same rows (doc/delivery.md,
"PostgreSQL", "Measured").

Converts data/nyc_taxi_large.ndjson (`make data`) with `ndingest convert --datasource
data/datasets/trips.datasource` into a day file, starts a PostgreSQL 15
(tests/integration/postgres.py), creates the table with `ndingest schema trips --postgres`,
then REPS times: the whole day file as one batch through build/tests/postgres_probe (read,
convert, COPY, cursor, COMMIT), and psql's \\copy of the converted rows. Prints the medians.
Run from the repository's root, after `make ndingest tools data`.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import postgres  # noqa: E402

REPS = int(os.environ.get("REPS", "9"))
PROBE = str(ROOT / "build" / "tests" / "postgres_probe")
DEFINITION = str(ROOT / "data" / "datasets" / "trips.datasource")


def main():
    tmp = Path(tempfile.mkdtemp(prefix="ndingest-pgbench-"))
    os.chmod(tmp, 0o755)
    day = tmp / "trips-2026-12-07.csv"
    with open(day, "wb") as f:
        subprocess.run([str(ROOT / "ndingest"), "convert", "--datasource", DEFINITION,
                        str(ROOT / "data" / "nyc_taxi_large.ndjson")], stdout=f,
                       stderr=subprocess.DEVNULL, check=True)
    pgrows = tmp / "trips.pg.csv"
    with open(pgrows, "wb") as f:
        subprocess.run([PROBE, "postgresql://x@127.0.0.1/x", "convert", "--definition",
                        DEFINITION, str(day)], stdout=f, check=True)
    nrows = day.read_bytes().count(b"\n")
    pg = postgres.PostgreSQL()
    try:
        ddl = subprocess.run([str(ROOT / "ndingest"), "schema", "trips", "--datasets",
                              str(ROOT / "data" / "datasets"), "--postgres"],
                             capture_output=True, text=True, check=True).stdout
        pg.psql(ddl)
        probe_s, copy_s = [], []
        for _ in range(REPS):
            pg.psql("TRUNCATE trips; DELETE FROM ndingest_delivery")
            t = time.monotonic()
            out = subprocess.run([PROBE, pg.url(), "send", "bench", "trips", "trips",
                                  "--definition", DEFINITION, str(day)],
                                 capture_output=True, text=True)
            probe_s.append(time.monotonic() - t)
            assert json.loads(out.stdout)["result"] == "stored", out.stdout
            assert pg.scalar("SELECT count(*) FROM trips") == str(nrows)
            pg.psql("TRUNCATE trips")
            t = time.monotonic()
            subprocess.run(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(pg.port), "-U",
                            "postgres", "-d", "events", "-c",
                            f"\\copy trips FROM '{pgrows}' CSV"], check=True)
            copy_s.append(time.monotonic() - t)
            assert pg.scalar("SELECT count(*) FROM trips") == str(nrows)
        p, c = statistics.median(probe_s), statistics.median(copy_s)
        mb = day.stat().st_size / 1e6
        print(f"{nrows} rows, {mb:.1f} MB day file, {REPS} runs (medians)")
        print(f"  postgres destination: {p:.3f} s  {nrows / p:,.0f} rows/s")
        print(f"  psql \\copy yardstick: {c:.3f} s  {nrows / c:,.0f} rows/s")
        print(f"  ratio (throughput):   {c / p:.2f}x")
    finally:
        pg.stop()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
