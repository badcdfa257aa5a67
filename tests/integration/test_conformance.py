"""test_conformance.py -- every case of the conformance corpus (tests/json/) through
`ndingest convert` (stdin and file) and through a running server (one keep-alive connection,
one body per case).

The verdict of a case comes from its name: y_ valid, n_ invalid, b_ blank (not counted).
Each file's bytes are meant to be one line; a case holding a raw LF (n_string_ctrl_0a) is
framed as the contract frames it, every piece invalid. The row of a y_ case is computed by
contract.py (an independent model), for a column list made of the case's own top-level keys
plus one absent key, so every value the case holds is rendered and compared.

ENGINE_ENVS lists the engine settings to run everything under: environment variables added
to ndingest's environment. By default, every JSON engine path the binary runs on this CPU
(NDINGEST_SIMD=scalar, sse2, avx2, avx512: a path it lacks says so on stderr and is left out),
so that the corpus proves each path, not only the best.
"""
import http.client
import os
import subprocess
import sys

import pytest

from conftest import BINARY, ROOT, Server, ok_response
import contract

CORPUS = ROOT / "tests" / "json"
CASES = sorted(CORPUS.glob("[ynb]_*.json"))

# Engine settings (extra environment variables); one run of every test per entry. Default:
# every path this binary runs here. NDINGEST_TEST_ENGINES overrides it: space-separated
# entries, each KEY=VALUE[;KEY=VALUE...], "default" for no variable, e.g.
#   NDINGEST_TEST_ENGINES="NDINGEST_SIMD=scalar NDINGEST_SIMD=avx2"
def _engine_envs(spec):
    envs = []
    for entry in spec.split():
        envs.append({} if entry == "default" else
                    dict(kv.split("=", 1) for kv in entry.split(";") if kv))
    return envs or [{}]


PATHS = ("scalar", "sse2", "avx2", "avx512")


def _available_paths():
    """{"NDINGEST_SIMD": path} for each path the binary runs on this CPU."""
    envs = []
    for path in PATHS:
        try:
            p = subprocess.run([str(BINARY), "convert", "/dev/null"], capture_output=True,
                               timeout=60, env=dict(os.environ, NDINGEST_SIMD=path))
        except OSError:
            return [{}]  # no binary yet: the tests themselves say so
        if p.returncode == 0 and b"not available" not in p.stderr:
            envs.append({"NDINGEST_SIMD": path})
    return envs or [{}]


ENGINE_ENVS = (_engine_envs(os.environ["NDINGEST_TEST_ENGINES"])
               if os.environ.get("NDINGEST_TEST_ENGINES") else _available_paths())
ENGINE_IDS = [",".join(f"{k}={v}" for k, v in e.items()) or "default" for e in ENGINE_ENVS]

ABSENT = "zz_absent_column"

# contract.py lets Python's json decode values: nesting near the 1,024 limit needs more than
# Python's default recursion limit (1,000).
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))


def engine_env(extra):
    env = dict(os.environ)
    env.update(extra)
    return env


def expected_counts(case):
    """(valid, invalid) for a case, from its name, the body framed as the contract frames it."""
    body = case.read_bytes()
    lines = [l for l in contract.split_lines(body) if l.strip(contract.BLANK) != b""]
    kind = case.name[0]
    if kind == "y":
        assert len(lines) == 1, f"{case.name}: a y_ case must be exactly one line"
        return 1, 0
    if kind == "n":
        assert lines, f"{case.name}: an n_ case must not be blank"
        return 0, len(lines)
    assert not lines, f"{case.name}: a b_ case must be blank"
    return 0, 0


def usable_column(key):
    """Whether a key can be named in --columns (a comma-separated argv list)."""
    if key == "" or "," in key or "\0" in key:
        return False
    try:
        return len(key.encode("utf-8")) <= 256
    except UnicodeEncodeError:  # a lone surrogate: no such key in a valid case
        return False


def case_columns(body):
    """The case's top-level keys (unescaped, first appearance order) plus one absent key;
    the default columns when the case is no object or has no usable key."""
    pairs = contract.parse_object(body)
    keys = [k for k in (pairs or {}) if usable_column(k)][:255]
    if not keys:
        return list(contract.DEFAULT_COLUMNS)
    return keys + [ABSENT]


def expected_row(body, columns):
    pairs = contract.parse_object(body)
    assert pairs is not None, "contract.py rejects a y_ case"
    return contract.csv_row([contract.cell_text(pairs.get(c)) for c in columns])


def test_corpus_is_there():
    kinds = {k: sum(1 for c in CASES if c.name[0] == k) for k in "ynb"}
    assert kinds["y"] >= 50 and kinds["n"] >= 150 and kinds["b"] >= 1, kinds


# -- convert -------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINE_ENVS, ids=ENGINE_IDS)
@pytest.mark.parametrize("via", ["stdin", "file"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_convert_case(case, via, engine):
    body = case.read_bytes()
    valid, invalid = expected_counts(case)
    columns = case_columns(body) if valid else list(contract.DEFAULT_COLUMNS)
    args = [str(BINARY), "convert", "--columns", ",".join(columns)]
    if via == "file":
        p = subprocess.run(args + [str(case)], capture_output=True, timeout=30, env=engine_env(engine))
    else:
        p = subprocess.run(args, input=body, capture_output=True, timeout=30, env=engine_env(engine))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ok_response(len(body), valid, invalid)
    assert p.stdout == (expected_row(body, columns) if valid else b"")


# -- server --------------------------------------------------------------------------

def server_columns():
    """Every usable top-level key of every y_ case (at most 255), plus an absent one."""
    cols = []
    for c in CASES:
        if c.name.startswith("y_"):
            for k in case_columns(c.read_bytes()):
                if k != ABSENT and k not in contract.DEFAULT_COLUMNS and k not in cols:
                    cols.append(k)
    cols = list(contract.DEFAULT_COLUMNS) + cols
    return cols[:255] + [ABSENT]


class Session:
    """One server, one keep-alive connection, and what was posted to it (in order)."""

    def __init__(self, server, columns):
        self.server = server
        self.columns = columns
        self.conn = server.connection(timeout=30)
        self.sock = None
        self.posted = []

    def post(self, body):
        self.conn.request("POST", "/", body=body,
                          headers={"Content-Type": "application/x-ndjson"})
        r = self.conn.getresponse()
        data = r.read()
        if self.sock is None:
            self.sock = self.conn.sock
        reused = self.conn.sock is self.sock
        return r.status, r.getheader("Connection"), data, reused

    def reconnect(self):
        self.conn.close()
        self.conn = self.server.connection(timeout=30)
        self.sock = None


@pytest.fixture(scope="module", params=ENGINE_ENVS, ids=ENGINE_IDS)
def session(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("conformance") / "out"
    columns = server_columns()
    s = Server(out, ["--workers", "1", "--utc", "--columns", ",".join(columns)],
               env=engine_env(request.param))
    sess = Session(s, columns)
    yield sess
    sess.conn.close()
    rc = s.stop()
    assert rc == 0, f"ndingest exited {rc} on SIGTERM: {s.stderr()}"
    # Workers' sanitizer reports (make asan) only reach their stderr: fail on them here.
    for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert mark not in s.stderr(), s.stderr()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_server_case(session, case):
    body = case.read_bytes()
    valid, invalid = expected_counts(case)
    try:
        status, connection, resp, reused = session.post(body)
    except (OSError, http.client.HTTPException):
        session.reconnect()
        raise
    assert status == 200, resp
    assert resp == ok_response(len(body), valid, invalid)
    assert (connection or "").lower() != "close" and reused, "keep-alive connection not kept"
    session.posted.append((case, body))


def test_server_files(session):
    """What the cases above wrote: the rows of the y_ cases (for the server's columns) and
    the lines of the n_ cases, raw, in the order they were posted."""
    assert session.posted, "no case was posted"
    want_rows, want_bad = [], []
    for case, body in session.posted:
        lines = [l for l in contract.split_lines(body) if l.strip(contract.BLANK) != b""]
        if case.name.startswith("y_"):
            want_rows.append(expected_row(body, session.columns))
        elif case.name.startswith("n_"):
            want_bad += [l + b"\n" for l in lines]
    s = session.server
    assert b"".join(p.read_bytes() for p in s.files("*.csv")) == b"".join(want_rows)
    assert b"".join(p.read_bytes() for p in s.files("*.invalid.ndjson")) == b"".join(want_bad)
