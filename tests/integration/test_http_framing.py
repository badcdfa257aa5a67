"""test_http_framing.py -- strict request framing (issue #9): every line ends in CRLF, chunk
data is followed by CRLF, only the chunked transfer coding is taken; a request framed any
other way gets 400 (or 501) and Connection: close, and none of its rows are written."""
import json
import time

import pytest

from conftest import ok_response, read_response, raw_connect, assert_closed

ROWS = b'{"vendorid": 1, "trip_distance": 2.5}\n{"vendorid": 2}\n'


def send(server, wire, one_byte=False):
    """wire on a fresh connection (whole, or a byte per write): the first response, and
    whether the server then closed the connection."""
    s, f = raw_connect(server)
    with s, f:
        if one_byte:
            for i in range(len(wire)):
                s.sendall(wire[i:i + 1])
                time.sleep(0.0005)
        else:
            s.sendall(wire)
        return read_response(f), s, f


def assert_refused(server, wire, status=400, one_byte=False, words=None):
    s, f = raw_connect(server)
    with s, f:
        if one_byte:
            for i in range(len(wire)):
                s.sendall(wire[i:i + 1])
        else:
            s.sendall(wire)
        got = read_response(f)
        assert got is not None, wire
        st, headers, body = got
        assert st == status, (wire, body)
        assert headers["connection"] == "close"
        error = json.loads(body)["error"]
        if words:
            assert words in error, error
        assert_closed(s, f)
    assert server.csv_bytes() == b"", wire


def head_cl(n, extra=b""):
    return b"POST / HTTP/1.1\r\nHost: t\r\n" + extra + b"Content-Length: %d\r\n" % n


CHUNKED = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("one_byte", [False, True], ids=["whole", "bytewise"])
def test_header_block_cr_without_lf_is_400(server, one_byte):
    # llhttp 8.1 takes any byte after the block's last CR: "\r\rX" ended the headers.
    assert_refused(server, head_cl(len(ROWS)) + b"\rX" + ROWS, one_byte=one_byte,
                   words="header block not ended by CRLF")


@pytest.mark.parametrize("after", [b"XX", b"X\n", b"\rX", b"\n\n", b"\n\r"])
@pytest.mark.parametrize("one_byte", [False, True], ids=["whole", "bytewise"])
def test_chunk_data_not_followed_by_crlf_is_400(server, after, one_byte):
    wire = CHUNKED + b"%x\r\n%s%s0\r\n\r\n" % (len(ROWS), ROWS, after)
    assert_refused(server, wire, one_byte=one_byte, words="chunk data not followed by CRLF")


def test_last_chunk_and_trailer_need_crlf(server):
    for tail in (b"0\r\n\rX", b"0\r\nX-T: 1\r\n\rX", b"0\r\nX-T: 1\n\r\n", b"0\n\r\n"):
        assert_refused(server, CHUNKED + b"%x\r\n%s\r\n" % (len(ROWS), ROWS) + tail)


def test_empty_header_name_is_400(server):
    assert_refused(server, head_cl(len(ROWS), b": v\r\n") + b"\r\n" + ROWS,
                   words="empty header field name")


def test_request_line_without_version_is_400(server):
    assert_refused(server, b"POST /\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(ROWS), ROWS),
                   words="without an HTTP version")
    assert_refused(server, b"GET /healthz\r\n\r\n", words="without an HTTP version")


@pytest.mark.parametrize("wire", [
    b"POST / HTTP/1.1\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(ROWS) + ROWS,
    b"POST / HTTP/1.1\r\nHost: t\nContent-Length: %d\r\n\r\n" % len(ROWS) + ROWS,
    b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\n" % len(ROWS) + ROWS,
    b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n%x\n%s\r\n0\r\n\r\n" % (len(ROWS), ROWS),
], ids=["request-line", "field-line", "block-end", "chunk-size"])
def test_bare_lf_is_400(server, wire):
    # RFC 9112 §2.2 lets a recipient take a bare LF as a line end; behind a proxy that does
    # not, that is two framings of one stream, so ndingest refuses it.
    assert_refused(server, wire)


def test_obs_fold_and_space_before_colon_are_400(server):
    assert_refused(server, head_cl(len(ROWS), b"X-A: 1\r\n folded\r\n") + b"\r\n" + ROWS,
                   words="obsolete line folding")
    assert_refused(server, head_cl(len(ROWS), b"X-A : 1\r\n") + b"\r\n" + ROWS,
                   words="whitespace before")


@pytest.mark.parametrize("framing", [
    b"Content-Length: %d\r\nContent-Length: %d\r\n" % (len(ROWS), len(ROWS)),
    b"Content-Length: %d, %d\r\n" % (len(ROWS), len(ROWS)),
    b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(ROWS),
    b"Content-Length: +%d\r\n" % len(ROWS),
], ids=["twice", "list", "with-te", "sign"])
def test_ambiguous_lengths_are_400(server, framing):
    assert_refused(server, b"POST / HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n" + ROWS)


def test_absolute_form_target_is_routed_on_its_path(server):
    for target in (b"http://ingest.example/", b"HTTP://ingest.example:8080/?src=a", b"http://ingest.example"):
        (st, headers, body), s, f = send(server, b"POST %s HTTP/1.1\r\nHost: ingest.example\r\n"
                                                 b"Content-Length: %d\r\n\r\n%s" % (target, len(ROWS), ROWS))
        assert (st, body) == (200, ok_response(len(ROWS), 2, 0)), target
    (st, _, body), s, f = send(server, b"GET http://h/healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    assert st == 200 and b"ok" in body
    (st, _, _), s, f = send(server, b"POST http://h/elsewhere HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert st == 404
    assert server.csv_bytes().count(b"\n") == 6


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"gzip", b"identity", b"chunked, chunked",
                                    b"deflate,chunked"])
def test_unknown_transfer_coding_is_501(server, coding):
    gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"  # bytes that would be judged as lines
    wire = (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: %s\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
            % (coding, len(gz), gz))
    assert_refused(server, wire, status=501, words="Transfer-Encoding")
    assert not server.files("*.ndjson"), "nothing quarantined either"


def test_two_transfer_encoding_lines_are_501(server):
    wire = (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(ROWS), ROWS))
    assert_refused(server, wire, status=501)


def test_501_is_counted_in_metrics(server):
    assert_refused(server, b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                   status=501)
    # The metrics of both workers are summed by whichever answers.
    _, _, text = server.request("GET", "/metrics")
    assert b'ndingest_requests_total{code="501"} 1\n' in text, text


def test_framing_error_after_a_pipelined_request(server):
    good = head_cl(len(ROWS)) + b"\r\n" + ROWS
    bad = CHUNKED + b"%x\r\n%sXX0\r\n\r\n" % (len(ROWS), ROWS)
    s, f = raw_connect(server)
    with s, f:
        s.sendall(good + bad + good)
        assert read_response(f)[0] == 200
        st, headers, _ = read_response(f)
        assert st == 400 and headers["connection"] == "close"
        assert_closed(s, f)
    assert server.csv_bytes().count(b"\n") == 2


def test_well_framed_chunked_with_extensions_and_trailers(server):
    wire = (CHUNKED + b"%x;name\r\n%s\r\n%x;a=\"x y\";q=v\r\n%s\r\n0;end\r\nX-Sum: 1\r\n\r\n"
            % (len(ROWS), ROWS, len(ROWS), ROWS))
    for one_byte in (False, True):
        (st, _, body), s, f = send(server, wire, one_byte)
        assert (st, body) == (200, ok_response(2 * len(ROWS), 4, 0))
    # One CRLF before a request line is ignored (RFC 9112 §2.2), a second is not.
    (st, _, _), s, f = send(server, b"\r\n" + head_cl(len(ROWS)) + b"\r\n" + ROWS)
    assert st == 200
    (st, _, _), s, f = send(server, b"\r\n\r\n" + head_cl(0) + b"\r\n")
    assert st == 400


@pytest.mark.parametrize("wire", [
    b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(ROWS), ROWS),
    b"POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s" % (len(ROWS), ROWS),
    b"POST / HTTP/1.0\r\nHost: a\r\nhost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(ROWS), ROWS),
], ids=["none", "two", "two-1.0"])
def test_host_missing_or_twice_is_400(server, wire):
    # RFC 9112 §3.2: a server MUST answer 400 to such a request (found by the h11 differential).
    assert_refused(server, wire, words="Host")
    # HTTP/1.0 needs none.
    (st, _, _), s, f = send(server, b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(ROWS), ROWS))
    assert st == 200


def test_tab_in_connection_is_400(server):
    # llhttp 8.1 misses "close" before a tab and would process the request after it
    # (RFC 9112 §9.6 forbids that); found by the h11 differential.
    second = head_cl(len(ROWS)) + b"\r\n" + ROWS
    assert_refused(server, b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\t\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(ROWS), ROWS) + second,
                   words="Connection")
