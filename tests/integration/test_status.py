"""--status: the live status line on a terminal stderr (and none when stderr is a file)."""
import os
import pty
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import BINARY, MEMCHECK, WRAPPER, Server, free_port

pytestmark = pytest.mark.skipif(
    MEMCHECK, reason="NDINGEST_MEMCHECK: --workers 0 has no main process to print the status line")

STATUS = re.compile(rb"\rndingest: ([\d,]+) rows/s  (\d+\.\d) MB/s  (\d+) conns?  ([\d,]+) req/s\x1b\[K")


class PtyServer(Server):
    """A Server whose stderr is the slave side of a pseudo-terminal; `output` is what the
    master side read."""

    def __init__(self, out_dir, args):  # pylint: disable=super-init-not-called
        self.host = "127.0.0.1"
        self.port = free_port()
        self.out_dir = out_dir
        self.args = WRAPPER + [str(BINARY), "serve", "--listen", f"127.0.0.1:{self.port}",
                               "--out-dir", str(out_dir)] + list(args)
        self.master, slave = pty.openpty()
        self.output = b""
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=slave)
        os.close(slave)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait_ready()

    def _read(self):
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every process holding the slave has exited
                return
            if not chunk:
                return
            with self.lock:
                self.output += chunk

    def stderr(self):
        with self.lock:
            return self.output.decode(errors="replace")

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                m = list(pattern.finditer(self.output))
            if m:
                return m
            time.sleep(0.05)
        return []

    def stop(self, sig=signal.SIGTERM, timeout=30):
        self._end(sig, timeout)
        self.reader.join(10)
        os.close(self.master)
        return self.proc.returncode


def nonzero(num):
    return int(num.replace(b",", b"")) > 0


def test_status_line_on_a_terminal(tmp_path, taxi_body):
    s = PtyServer(tmp_path / "out", ["--workers", "2", "--status", "1"])
    try:
        lines = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, _, _ = s.post(taxi_body)
            assert status == 200
            lines = [m for m in STATUS.finditer(s.output) if nonzero(m.group(1))]
            if lines:
                break
            time.sleep(0.1)
        assert lines, s.stderr()
        m = lines[-1]
        assert nonzero(m.group(4)), m.group(0)        # requests/s
        assert float(m.group(2)) > 0, m.group(0)      # MB/s
        # rewritten in place: no newline between status lines
        first = next(STATUS.finditer(s.output))
        assert b"\n" not in s.output[first.start():m.end()], s.stderr()
    finally:
        rc = s.stop()
    assert rc == 0, s.stderr()
    # the line is cleared before the stop's log lines, which start on a line of their own
    tail = s.output[s.output.rfind(b"req/s\x1b[K"):]
    assert tail.find(b"\r\x1b[K") < tail.find(b"stopped after"), s.stderr()


def test_status_off_with_quiet_or_zero(tmp_path, taxi_body):
    for i, args in enumerate((["--status", "1", "--quiet"], ["--status", "0"])):
        s = PtyServer(tmp_path / f"out{i}", ["--workers", "1"] + args)
        try:
            assert s.post(taxi_body)[0] == 200
            time.sleep(2.5)
        finally:
            rc = s.stop()
        assert rc == 0, s.stderr()
        assert b"rows/s" not in s.output, (args, s.stderr())


def test_no_status_line_when_stderr_is_a_file(start_server, taxi_body):
    s = start_server("--workers", "2", "--status", "1")
    for _ in range(5):
        assert s.post(taxi_body)[0] == 200
        time.sleep(0.5)
    assert s.stop() == 0
    err = s.stderr()
    assert "rows/s" not in err and "\x1b[K" not in err and "\r" not in err, err


def test_status_line_shows_the_delivery_lag(tmp_path, taxi_body):
    """With --deliver the live line adds the worst dataset's delivery lag: here the
    destination's port refuses connections, so the rows posted wait and the lag grows."""
    closed = free_port()
    s = PtyServer(tmp_path / "out", ["--workers", "1", "--status", "1", "--deliver",
                                     f"clickhouse://127.0.0.1:{closed}/db"])
    try:
        assert s.post(taxi_body)[0] == 200
        lag = re.compile(rb"req/s  lag (\d+\.\d) s")
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(float(m.group(1)) >= 2 for m in seen):
            seen = s.wait_for(lag, 2)
        assert any(float(m.group(1)) >= 2 for m in seen), s.stderr()
    finally:
        rc = s.stop()
    assert rc == 0, s.stderr()
