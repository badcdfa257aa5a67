"""contract.py -- an independent Python model of the line contract (doc/format.md), used by
the integration tests to compute expected CSV from the input, never from what ndingest wrote.

Deliberately simple and slow: Python's json module does the strict parsing; a small walker
over the top-level object keeps each value's text exactly as sent.
"""
import json
import sys

# Numbers of any size are valid (Python 3.11 refuses to build ints over 4,300 digits), and
# nesting up to 1,024 levels is (Python's default recursion limit is 1,000).
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
MAX_DEPTH = 1024

DEFAULT_COLUMNS = ["vendorid", "tpep_pickup_datetime", "trip_distance", "total_amount"]
WS = " \t\r\n"
BLANK = b" \t\r"


class Raw:
    """A value to be written exactly as sent (number, object, array)."""

    def __init__(self, text):
        self.text = text


def _reject_constant(name):
    raise ValueError("not JSON: " + name)


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, strict=True)
_PAIRS = json.JSONDecoder(parse_constant=_reject_constant, strict=True,
                          object_pairs_hook=lambda pairs: [tuple(p) for p in pairs])


def _strict(value, depth):
    """No lone surrogate (U+D800..U+DFFF) in any string or key, nesting at most MAX_DEPTH;
    value sits at depth `depth` (the top-level object's values at 2)."""
    stack = [(value, depth)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
                return False
        elif isinstance(v, list):
            if d > MAX_DEPTH:
                return False
            for x in v:
                if isinstance(x, tuple):  # an object's pair (object_pairs_hook below)
                    stack.append((x[0], d))
                    stack.append((x[1], d + 1))
                else:
                    stack.append((x, d + 1))
    return True


def _skip_ws(s, i):
    while i < len(s) and s[i] in WS:
        i += 1
    return i


def parse_object(line):
    """The line's top-level pairs as a dict of name -> value (last duplicate wins), where a
    value is str, True, False, None or Raw; None when the line is not exactly one strict
    JSON object."""
    try:
        s = line.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    try:
        i = _skip_ws(s, 0)
        if i >= len(s) or s[i] != "{":
            return None
        pairs = {}
        i = _skip_ws(s, i + 1)
        if i < len(s) and s[i] == "}":
            i += 1
        else:
            while True:
                if i >= len(s) or s[i] != '"':
                    return None
                key, i = _DECODER.raw_decode(s, i)
                if not _strict(key, 2):
                    return None
                i = _skip_ws(s, i)
                if i >= len(s) or s[i] != ":":
                    return None
                i = _skip_ws(s, i + 1)
                start = i
                value, i = _DECODER.raw_decode(s, i)
                if not _strict(_PAIRS.raw_decode(s, start)[0], 2):
                    return None
                if isinstance(value, (str, bool)) or value is None:
                    pairs[key] = value
                else:  # number, object or array: keep the text as sent
                    pairs[key] = Raw(s[start:i])
                i = _skip_ws(s, i)
                if i < len(s) and s[i] == ",":
                    i = _skip_ws(s, i + 1)
                    continue
                if i < len(s) and s[i] == "}":
                    i += 1
                    break
                return None
        if _skip_ws(s, i) != len(s):
            return None
        return pairs
    except (ValueError, RecursionError):
        return None


def cell_text(value):
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Raw):
        return value.text
    return value


def csv_field(text):
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_row(cells, crlf=False):
    fields = [csv_field(c) for c in cells]
    if len(fields) == 1 and fields[0] == "":
        fields = ['""']  # as Python's csv module: a lone empty cell is not an empty line
    return (",".join(fields) + ("\r\n" if crlf else "\n")).encode("utf-8")


def header_row(columns, crlf=False):
    return csv_row(list(columns), crlf)


def split_lines(body):
    """The lines of a body as the contract frames them: each ends at \\n, and a final line
    without \\n counts."""
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def expected(body, columns=DEFAULT_COLUMNS, crlf=False, max_line=1 << 20):
    """(csv bytes, quarantined bytes, valid, invalid) for one body."""
    rows, quarantined = [], []
    valid = invalid = 0
    for line in split_lines(body):
        if len(line) > max_line:
            invalid += 1
            continue
        if line.strip(BLANK) == b"":
            continue
        pairs = parse_object(line)
        if pairs is None:
            invalid += 1
            quarantined.append(line + b"\n")
            continue
        valid += 1
        rows.append(csv_row([cell_text(pairs.get(c)) for c in columns], crlf))
    return b"".join(rows), b"".join(quarantined), valid, invalid
