"""test_json_differential.py -- ndingest's line verdicts against Python's json module made
strict, on a few thousand seeded random lines: generated JSON documents (nested values,
unicode, every escape, numbers of every form, deep nesting around the 1,024 limit) and
mutations of them (bit flips, inserted `,` `"` `\\` control bytes and 0x80..0xFF, deletions,
truncations, inserted LFs).

The oracle (`strict_verdict`) is /usr/bin/python3's json with everything Python allows and
the contract does not turned off: NaN/Infinity/-Infinity rejected (parse_constant raises), a
top-level value other than an object rejected, lone surrogates rejected (decoded keys and
strings checked for U+D800..U+DFFF), invalid UTF-8 rejected (strict decoding), nesting deeper
than 1,024 rejected (the top-level object is level 1). Like ndingest, Python accepts
duplicate keys (the last wins). Blank lines (spaces, tabs, CRs) are not counted.

Each generated document starts with a unique top-level "id" and is converted with
`--columns id,v`, so each valid line's row names it: the rows of one `convert` run (the whole
body, via stdin and via a file) must be exactly the oracle's rows for its valid lines, in
order, and the stats must match. Through a server, the quarantine file must also hold exactly
the oracle's invalid lines, so every line's verdict is observed.
"""
import csv
import io
import json
import os
import random
import subprocess
import sys

import pytest

from conftest import BINARY, ok_response
import contract
from test_conformance import ENGINE_ENVS, ENGINE_IDS, engine_env

SEED = int(os.environ.get("NDINGEST_DIFF_SEED", "20261125"))
N_DOCS = 1500        # generated documents; each also yields one mutated line or more
COLUMNS = ["id", "v"]
MAX_DEPTH = 1024

sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))

# -- the oracle ----------------------------------------------------------------------------

BLANK, VALID, INVALID = "blank", "valid", "invalid"


def _reject_constant(name):
    raise ValueError("not JSON: " + name)


class _Num:
    """A number, kept as text: Python's int() refuses over 4,300 digits, the contract not."""
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


class _Pairs(list):
    """An object as all its (key, value) pairs: a dict would drop the values of repeated
    keys unchecked (a lone surrogate in a value that a later duplicate replaces still makes
    the line invalid)."""


_STRICT = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_Num, parse_float=_Num,
                           object_pairs_hook=_Pairs, strict=True)


def _has_surrogate(s):
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in s)


def _strict_ok(obj):
    """No lone surrogate anywhere, nesting at most MAX_DEPTH (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, _Pairs):
            if depth > MAX_DEPTH:
                return False
            for k, x in v:
                if _has_surrogate(k):
                    return False
                stack.append((x, depth + 1))
        elif isinstance(v, list):  # an array
            if depth > MAX_DEPTH:
                return False
            stack.extend((x, depth + 1) for x in v)
        elif isinstance(v, str):
            if _has_surrogate(v):
                return False
    return True


def strict_verdict(line):
    if line.strip(b" \t\r") == b"":
        return BLANK
    try:
        text = line.decode("utf-8", errors="strict")
        obj = _STRICT.decode(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return INVALID
    if not isinstance(obj, _Pairs) or not _strict_ok(obj):
        return INVALID
    return VALID


def model(body):
    """(rows, quarantined, valid, invalid, verdicts) the oracle expects for a body; the rows
    are rendered by contract.py for COLUMNS. contract.py lets json build ints, which Python
    3.11 refuses over 4,300 digits: the limit is lifted while the model runs."""
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else None
    if limit is not None:
        sys.set_int_max_str_digits(0)
    try:
        return _model(body)
    finally:
        if limit is not None:
            sys.set_int_max_str_digits(limit)


def _model(body):
    rows, bad, verdicts = [], [], []
    for line in contract.split_lines(body):
        v = strict_verdict(line)
        verdicts.append(v)
        if v == VALID:
            pairs = contract.parse_object(line)
            assert pairs is not None, f"contract.py rejects a strictly valid line: {line[:200]!r}"
            rows.append(contract.csv_row([contract.cell_text(pairs.get(c)) for c in COLUMNS]))
        elif v == INVALID:
            bad.append(line + b"\n")
    return (b"".join(rows), b"".join(bad), verdicts.count(VALID), verdicts.count(INVALID),
            verdicts)


# -- the generator -------------------------------------------------------------------------

WS = [" ", "\t", "\r"]
SHORT_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
             "\t": "\\t", "/": "\\/"}
CHAR_POOLS = [
    "abcdefghijklmnopqrstuvwxyz0123456789 ,:{}[]#=+-",
    '"\\/\b\f\n\r\t',
    "".join(map(chr, range(0x00, 0x20))) + "\x7f",
    "\u00e9\u00fc\u00df\u00a0\u0080\u07ff",                 # 2-byte
    "\u0800\u65e5\u672c\u2028\u2029\ufeff\ufffe\uffff\ud7ff\ue000",  # 3-byte
    "\U00010000\U0001f600\U0010ffff\U0002a6d6",             # 4-byte
]


class Gen:
    def __init__(self, rnd):
        self.r = rnd

    def ws(self):
        r = self.r
        return "" if r.random() < 0.75 else "".join(r.choice(WS) for _ in range(r.randint(1, 3)))

    def char(self):
        return self.r.choice(self.r.choice(CHAR_POOLS))

    def u_escape(self, cp):
        h = "%04x" % cp
        return "\\u" + (h.upper() if self.r.random() < 0.5 else h)

    def string(self, max_len=12):
        r = self.r
        out = []
        for _ in range(r.randint(0, max_len)):
            ch = self.char()
            cp = ord(ch)
            p = r.random()
            if cp >= 0x10000:
                if p < 0.4:   # as a surrogate pair escape
                    hi = 0xD800 + ((cp - 0x10000) >> 10)
                    lo = 0xDC00 + ((cp - 0x10000) & 0x3FF)
                    out.append(self.u_escape(hi) + self.u_escape(lo))
                else:
                    out.append(ch)
            elif ch in SHORT_ESC and (cp < 0x20 or ch in '"\\' or p < 0.5):
                out.append(SHORT_ESC[ch] if p < 0.7 else self.u_escape(cp))
            elif cp < 0x20 or p < 0.15:
                out.append(self.u_escape(cp))
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'

    def number(self):
        r = self.r
        s = "-" if r.random() < 0.3 else ""
        p = r.random()
        if p < 0.2:
            s += "0"
        elif p < 0.9:
            s += str(r.randint(1, 9)) + "".join(r.choice("0123456789") for _ in range(r.randint(0, 8)))
        else:
            s += str(r.randint(1, 9)) + "".join(r.choice("0123456789") for _ in range(r.randint(20, 60)))
        if r.random() < 0.35:
            s += "." + "".join(r.choice("0123456789") for _ in range(r.randint(1, r.choice([3, 30]))))
        if r.random() < 0.3:
            s += r.choice("eE") + r.choice(["", "+", "-"]) + "".join(
                r.choice("0123456789") for _ in range(r.randint(1, r.choice([2, 25]))))
        return s

    def value(self, depth, budget):
        r = self.r
        p = r.random()
        if depth < budget and p < 0.25:
            return self.array(depth + 1, budget)
        if depth < budget and p < 0.45:
            return self.obj(depth + 1, budget)
        p = r.random()
        if p < 0.4:
            return self.string()
        if p < 0.8:
            return self.number()
        return r.choice(["true", "false", "null"])

    def key(self):
        r = self.r
        p = r.random()
        if p < 0.1:
            return '"v"'     # a duplicate or nested "v": the last top-level one wins
        if p < 0.15:
            return '"id"'    # a nested "id" must never be taken for the column
        return self.string(6)

    def members(self, depth, budget, n):
        return [self.ws() + self.key() + self.ws() + ":" + self.ws() + self.value(depth, budget) + self.ws()
                for _ in range(n)]

    def array(self, depth, budget):
        n = self.r.randint(0, 5)
        if n == 0:
            return "[" + self.ws() + "]"
        return "[" + ",".join(self.ws() + self.value(depth, budget) + self.ws() for _ in range(n)) + "]"

    def obj(self, depth, budget):
        n = self.r.randint(0, 4)
        if n == 0:
            return "{" + self.ws() + "}"
        return "{" + ",".join(self.members(depth, budget, n)) + "}"

    def deep(self, levels):
        """A value nesting `levels` levels of mixed arrays and objects."""
        r = self.r
        opens, closes = [], []
        for _ in range(levels):
            if r.random() < 0.5:
                opens.append("[" + self.ws())
                closes.append(self.ws() + "]")
            else:
                opens.append('{"k' + str(r.randint(0, 9)) + '":' + self.ws())
                closes.append(self.ws() + "}")
        inner = self.r.choice(["1", '"x"', "[]", "{}", "null"])
        return "".join(opens) + inner + "".join(reversed(closes))

    def document(self, ident):
        """One top-level object, starting with its unique "id" (the key sometimes escaped)."""
        r = self.r
        id_key = r.choice(['"id"'] * 6 + ['"\\u0069d"', '"i\\u0064"'])
        head = self.ws() + "{" + self.ws() + id_key + self.ws() + ":" + self.ws() + '"' + ident + '"' + self.ws()
        p = r.random()
        if p < 0.04:
            # around the depth limit: the top-level object is level 1, "v" adds the rest
            levels = r.choice([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 1500])
            rest = [self.ws() + '"v"' + self.ws() + ":" + self.deep(levels)]
        else:
            budget = r.choice([1, 2, 3, 4, 6, 12, 40])
            rest = self.members(1, budget, r.randint(0, 6))
            if r.random() < 0.5:
                rest.insert(r.randint(0, len(rest)), self.ws() + '"v"' + self.ws() + ":" + self.ws()
                            + self.value(1, budget) + self.ws())
        return head + "".join("," + m for m in rest) + "}" + self.ws()

    def special(self, ident):
        """Lines aimed at what Python allows and the contract does not (and near misses)."""
        r = self.r
        i = '"id":"%s"' % ident
        return r.choice([
            "{%s,\"v\":NaN}", "{%s,\"v\":Infinity}", "{%s,\"v\":-Infinity}", "{%s,\"v\":[NaN]}",
            "{%s,\"v\":\"\\ud800\"}", "{%s,\"v\":\"\\udfff\"}", "{%s,\"v\":\"\\ud83d\\u0041\"}",
            "{%s,\"v\":\"\\ude00\\ud83d\"}", "{%s,\"v\":{\"\\udc00\":1}}", "{\"\\ud800\":0,%s}",
            "{%s,\"v\":\"\\ud83d\\ude00\"}", "{%s,\"v\":\"\\uDBFF\\uDFFF\"}",
            "[{%s}]", "\"%s\"", "{%s}{}", "{%s} x", "\ufeff{%s}", "{%s,\"v\":1.}", "{%s,\"v\":01}",
            "{%s,\"v\":.5}", "{%s,\"v\":+1}", "{%s,\"v\":0x1}", "{%s,\"v\":True}", "{%s,}",
            "{%s,\"v\":\"\\x41\"}", "{%s,\"v\":'a'}", "{%s /* c */}", "{%s,\"v\":1e}",
            "{%s,\"v\":\"\\u00e\"}", "{%s,\"v\":-}", "{%s,\"v\":[1,]}", "{%s,\"v\":\"a\x00b\"}",
            "{%s,\"v\":\"\u0661\"}", "{%s,\"v\":\u0661}", "\x0c{%s}", "{%s}\x0b", "{%s}\u00a0",
            "{%s,\"v\":1E400}", "{%s,\"v\":-0.0e-0}", "{%s,\"v\":" + "9" * 5000 + "}",
        ]) % i


# -- mutations -------------------------------------------------------------------------------

INSERTS = [b",", b'"', b"\\", b"\n"] + [bytes([c]) for c in range(0x00, 0x20)] + \
          [bytes([c]) for c in range(0x80, 0x100)]
# Multi-byte sequences at the edges of well-formed UTF-8 (Unicode Table 3-7), valid and not:
# random bytes almost never make them.
UTF8_EDGES = [
    b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xef\xbb\xbf",                      # valid
    b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xe0\x9f\xbf", b"\xf0\x80\x80\xaf",
    b"\xf0\x8f\xbf\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80",
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82",
    b"\xf0\x9f\x98", b"\xc3", b"\x80\x80",                                             # not
]


def mutate(rnd, b):
    b = bytearray(b)
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        if not b:
            break
        op = rnd.random()
        at = rnd.randrange(len(b))
        if op < 0.25:                                    # flip a bit
            b[at] ^= 1 << rnd.randrange(8)
        elif op < 0.35:                                  # replace with a random byte
            b[at] = rnd.randrange(256)
        elif op < 0.6:                                   # insert a structural / control / high byte
            b[at:at] = rnd.choice(INSERTS)
        elif op < 0.7:                                   # insert a UTF-8 edge sequence
            b[at:at] = rnd.choice(UTF8_EDGES)
        elif op < 0.85:                                  # delete a byte or a short span
            del b[at:at + rnd.choice([1, 1, 2, 5])]
        else:                                            # truncate
            del b[at:]
    return bytes(b).replace(b"\n", b"") if rnd.random() < 0.8 else bytes(b)


def corpus(seed=SEED, n_docs=N_DOCS):
    """The body (bytes): generated documents, mutated ones, special lines, blank lines."""
    rnd = random.Random(seed)
    g = Gen(rnd)
    lines = []
    for i in range(n_docs):
        doc = g.document("g%d" % i).encode("utf-8", errors="surrogatepass")
        lines.append(doc)
        lines.append(mutate(rnd, g.document("m%d" % i).encode("utf-8", errors="surrogatepass")))
        if rnd.random() < 0.15:
            lines.append(g.special("s%d" % i).encode("utf-8", errors="surrogatepass"))
        if rnd.random() < 0.02:
            lines.append(rnd.choice([b"", b" ", b"\t\r", b"\r"]))
    return b"\n".join(lines) + b"\n"


# -- the tests -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def body():
    return corpus()


@pytest.fixture(scope="module")
def expected(body):
    return model(body)


def describe(body, expected, out):
    """Where the rows part: the first valid line whose row is not where it should be, and the
    lines (by the oracle invalid) that the row found there seems to come from."""
    lines = contract.split_lines(body)
    verdicts = expected[4]
    pos = 0
    for k, (line, v) in enumerate(zip(lines, verdicts)):
        if v != VALID:
            continue
        pairs = contract.parse_object(line)
        row = contract.csv_row([contract.cell_text(pairs.get(c)) for c in COLUMNS])
        if out.startswith(row, pos):
            pos += len(row)
            continue
        got = out[pos:pos + 300]
        first = next(csv.reader(io.StringIO(got.decode("utf-8", "replace"))), [""])
        culprits = [(n, l[:200]) for n, (l, w) in enumerate(zip(lines, verdicts))
                    if w == INVALID and first and first[0] and first[0].encode() in l][:3]
        return (f"line {k} (oracle: valid) should give row {row!r}; output there: {got[:200]!r}; "
                f"invalid lines holding that row's id: {culprits!r}")
    if pos != len(out):
        return f"extra output after the last expected row: {out[pos:pos + 300]!r}"
    return "rows equal"


def test_corpus_shape(expected):
    """The body is a real mix: many valid and many invalid lines, depth edges included."""
    _, _, valid, invalid, verdicts = expected
    assert 1500 <= valid and 1000 <= invalid, (valid, invalid)
    assert len(verdicts) >= 3000


@pytest.mark.parametrize("engine", ENGINE_ENVS, ids=ENGINE_IDS)
@pytest.mark.parametrize("via", ["stdin", "file"])
def test_convert_matches_strict_python(body, expected, via, engine, tmp_path):
    rows, _, valid, invalid, _ = expected
    args = [str(BINARY), "convert", "--columns", ",".join(COLUMNS)]
    if via == "file":
        f = tmp_path / "diff.ndjson"
        f.write_bytes(body)
        p = subprocess.run(args + [str(f)], capture_output=True, timeout=60, env=engine_env(engine))
    else:
        p = subprocess.run(args, input=body, capture_output=True, timeout=60, env=engine_env(engine))
    assert p.returncode == 0, p.stderr
    assert p.stderr == ok_response(len(body), valid, invalid), describe(body, expected, p.stdout)
    assert p.stdout == rows, describe(body, expected, p.stdout)


@pytest.mark.parametrize("engine", ENGINE_ENVS, ids=ENGINE_IDS)
def test_server_verdict_per_line(body, expected, engine, start_server):
    """Every line's verdict observed: the rows file holds the valid lines' rows, the
    quarantine file the invalid lines, byte for byte, both in order."""
    rows, bad, valid, invalid, _ = expected
    s = start_server("--workers", "1", "--utc", "--columns", ",".join(COLUMNS), env=engine_env(engine))
    status, _, resp = s.post(body, {"Content-Type": "application/x-ndjson"})
    assert status == 200, resp
    assert resp == ok_response(len(body), valid, invalid)
    got_rows = b"".join(p.read_bytes() for p in s.files("*.csv"))
    got_bad = b"".join(p.read_bytes() for p in s.files("*.invalid.ndjson"))
    if got_bad != bad:
        want_l, got_l = bad.split(b"\n"), got_bad.split(b"\n")
        k = next(i for i in range(max(len(want_l), len(got_l)))
                 if i >= len(want_l) or i >= len(got_l) or want_l[i] != got_l[i])
        pytest.fail(f"quarantine differs at invalid line {k}: expected "
                    f"{want_l[k][:300] if k < len(want_l) else None!r}, got "
                    f"{got_l[k][:300] if k < len(got_l) else None!r}")
    assert got_rows == rows, describe(body, expected, got_rows)
