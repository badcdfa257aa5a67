"""test_concurrency.py -- many clients, several workers, one day's file: every acknowledged
row lands exactly once and whole, and --header is written once however the workers race."""
import csv
import io
import json
import random
import socket
import threading
import time

from conftest import ok_response, today
import contract

COLUMNS = ["id", "a", "b", "c"]
CLIENTS = 6
ROWS_PER_CLIENT = 18_000  # 108,000 rows in all
ALPHABET = 'abcdefghij ,"\n\r\\/\u00e9\u65e5\U0001F600'


_POOLS = {}


def pad(rnd, n):
    """About n characters, with characters that need CSV quoting or JSON escapes: a slice of
    a random pool (cheap even for 200 KB cells)."""
    if n <= 0:
        return ""
    pool = _POOLS.get(id(rnd))
    if pool is None:
        pool = _POOLS[id(rnd)] = "".join(rnd.choice(ALPHABET) for _ in range(1 << 16))
    if n >= len(pool):
        return (pool * (n // len(pool) + 1))[:n]
    start = rnd.randrange(len(pool) - n)
    return pool[start:start + n]


def line_length(rnd):
    """Line lengths from ~10 B to 200 KB, mostly short."""
    roll = rnd.random()
    if roll < 0.983:
        return rnd.randint(0, 200)
    if roll < 0.9985:
        return rnd.randint(1_000, 20_000)
    return rnd.randint(100_000, 200_000)


def make_line(rnd, rid, size, ascii_only, compact):
    obj = {"id": rid}
    if size >= 10:
        shape = rnd.randrange(4)
        if shape == 0:
            obj["a"] = pad(rnd, size)
        elif shape == 1:
            obj["b"] = pad(rnd, size // 2)
            obj["c"] = pad(rnd, size - size // 2)
        elif shape == 2:
            obj = {"c": pad(rnd, size // 3), "id": rid, "x": {"nested": [1, 2]},
                   "a": rnd.random() > 0.5, "b": None}
        else:
            obj["a"] = [pad(rnd, size // 4), 1.5, {"k": "v"}]
            obj["b"] = rnd.randint(-10**12, 10**12)
    line = json.dumps(obj, ensure_ascii=ascii_only,
                      separators=(",", ":") if compact else (", ", ": "))
    return line.encode("utf-8")


def make_client_rows(client, rnd):
    """[(id, line bytes, expected cells)] for one client; ids are distinct across clients."""
    rows = []
    for n in range(ROWS_PER_CLIENT):
        rid = client * 1_000_000 + n
        size = line_length(rnd)
        ascii_only = rnd.random() < 0.5
        compact = rnd.random() < 0.7
        while True:
            raw = make_line(rnd, rid, size, ascii_only, compact)
            if len(raw) <= 200_000:
                break
            size = size * 3 // 4  # escapes made it longer than 200 KB
        pairs = contract.parse_object(raw)
        assert pairs is not None, raw[:100]
        cells = [contract.cell_text(pairs.get(c)) for c in COLUMNS]
        rows.append((rid, raw, cells))
    return rows


def bodies_for(rows, rnd):
    """Splits a client's rows into bodies of 1..4 MB, with blank and invalid lines mixed in.
    Yields (body, valid, invalid)."""
    i = 0
    while i < len(rows):
        target = rnd.randint(1 << 20, 4 << 20)
        parts, size, valid, invalid = [], 0, 0, 0
        while i < len(rows) and size < target:
            raw = rows[i][1]
            parts.append(raw + (b"\r\n" if rnd.random() < 0.1 else b"\n"))
            size += len(raw) + 1
            valid += 1
            i += 1
            roll = rnd.random()
            if roll < 0.01:
                parts.append(b"\n  \n")
            elif roll < 0.02:
                parts.append(b'{"id": broken\n')
                invalid += 1
        body = b"".join(parts)
        if rnd.random() < 0.3:
            body = body.rstrip(b"\r\n")  # final line without \n
        yield body, valid, invalid


def send(s, body, chunked, rnd, conn):
    if not chunked:
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/x-ndjson"})
    else:
        conn.putrequest("POST", "/")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        i = 0
        while i < len(body):
            n = rnd.choice((1, 7, 100, 4096, 65536, 300_000))
            piece = body[i:i + n]
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            i += n
        conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    return r.status, r.read()


def client_main(s, client, rows, acked, errors):
    rnd = random.Random(1000 + client)
    conn = s.connection(timeout=120)
    try:
        for body, valid, invalid in bodies_for(rows, rnd):
            status, resp = send(s, body, rnd.random() < 0.5, rnd, conn)
            if status != 200 or resp != ok_response(len(body), valid, invalid):
                errors.append((client, status, resp[:200]))
                return
            acked[client] += valid
            if rnd.random() < 0.2:  # sometimes a fresh connection (maybe another worker)
                conn.close()
                conn = s.connection(timeout=120)
    except Exception as e:  # noqa: BLE001 -- reported by the test
        errors.append((client, repr(e)))
    finally:
        conn.close()


def test_concurrent_clients_rows_exactly_once(start_server):
    t0 = time.monotonic()
    s = start_server("--workers", "4", "--columns", ",".join(COLUMNS))
    all_rows = [make_client_rows(c, random.Random(c)) for c in range(CLIENTS)]
    expected = {rid: cells for rows in all_rows for rid, _, cells in rows}
    lengths = [len(raw) for rows in all_rows for _, raw, _ in rows]
    assert len(expected) == CLIENTS * ROWS_PER_CLIENT >= 100_000
    assert min(lengths) <= 12 and max(lengths) >= 150_000, (min(lengths), max(lengths))

    acked = [0] * CLIENTS
    errors = []
    threads = [threading.Thread(target=client_main, args=(s, c, all_rows[c], acked, errors))
               for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "clients still running after 120 s"
    assert not errors, errors[:5]
    assert sum(acked) == len(expected)

    text = s.csv_bytes().decode("utf-8", errors="surrogateescape")  # torn UTF-8 fails below
    seen = {}
    for n, row in enumerate(csv.reader(io.StringIO(text, newline=""))):
        assert len(row) == len(COLUMNS), f"row {n} torn: {row!r:.300}"
        rid = int(row[0])
        assert rid in expected, f"row {n}: unknown id {row!r:.300}"
        assert rid not in seen, f"id {rid} written twice (rows {seen[rid]} and {n})"
        assert row == expected[rid], f"id {rid} differs: {row!r:.300}"
        seen[rid] = n
    missing = set(expected) - set(seen)
    assert not missing, f"{len(missing)} acknowledged rows missing, e.g. {sorted(missing)[:5]}"
    # The file per client keeps each client's order (one connection's bodies are serial).
    order = {}
    for rid, n in sorted(seen.items(), key=lambda kv: kv[1]):
        client = rid // 1_000_000
        assert order.get(client, -1) < rid, f"client {client}'s rows out of order at id {rid}"
        order[client] = rid
    assert time.monotonic() - t0 < 120


def test_header_written_once_under_race(start_server, tmp_path):
    """Many clients hit a new day's file at once through several workers: one header."""
    header = contract.header_row(contract.DEFAULT_COLUMNS)
    for round_ in range(10):
        s = start_server("--workers", "6", "--header", out_dir=tmp_path / f"race{round_}")
        conns = []
        for _ in range(32):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            conns.append(c)
        time.sleep(0.2)  # let the workers accept their connections
        barrier = threading.Barrier(len(conns))
        results = [None] * len(conns)

        def go(i, c):
            body = b'{"vendorid":%d}\n{"vendorid":%d}\n' % (i, 1000 + i)
            req = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n%s" % (len(body), body))
            barrier.wait()
            c.sendall(req)
            data = b""
            while True:
                got = c.recv(65536)
                if not got:
                    break
                data += got
            results[i] = data

        threads = [threading.Thread(target=go, args=(i, c)) for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for c in conns:
            c.close()
        for i, data in enumerate(results):
            assert data is not None and data.startswith(b"HTTP/1.1 200"), (i, data)
            assert data.endswith(ok_response(len(b'{"vendorid":%d}\n{"vendorid":%d}\n' % (i, 1000 + i)), 2, 0))
        got = (s.out_dir / f"nyc_taxi-{today()}.csv").read_bytes()
        assert got.count(header) == 1, got[:500]
        assert got.startswith(header), got[:500]
        rows = got[len(header):].splitlines()
        want = sorted(b"%d,,," % v for i in range(len(conns)) for v in (i, 1000 + i))
        assert sorted(rows) == want
