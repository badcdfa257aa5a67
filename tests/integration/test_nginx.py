"""test_nginx.py -- two ndingest instances behind nginx (doc/scaling.md): bodies streamed
through (proxy_request_buffering off, HTTP/1.1 upstream keep-alive), each instance writing
its own --name; every row of every acknowledged request lands exactly once across both."""
import collections
import http.client
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

import conftest
from conftest import free_port, ok_response

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SUFFIX = b",2017-01-01 00:00:00,1.5,9.75"


def marked_body(first, n):
    return b"".join(b'{"vendorid":%d,"tpep_pickup_datetime":"2017-01-01 00:00:00","trip_distance":1.5,'
                    b'"total_amount":9.75}\n' % (first + i) for i in range(n))


CONF = """
worker_processes 2;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream ndingest {{
        server 127.0.0.1:{a};
        server 127.0.0.1:{b};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://ndingest;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
        }}
    }}
}}
"""


@pytest.fixture
def nginx_front(start_server, tmp_path):
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    if conftest.MEMCHECK:
        pytest.skip("NDINGEST_MEMCHECK: not a memory test")
    a = start_server("--workers", "1", "--name", "trips-a")
    b = start_server("--workers", "1", "--name", "trips-b")
    d = tmp_path / "nginx"
    d.mkdir()
    port = free_port()
    (d / "nginx.conf").write_text(CONF.format(d=d, a=a.port, b=b.port, port=port))
    err = open(tmp_path / "nginx-stderr.log", "wb")
    p = subprocess.Popen([NGINX, "-p", str(d), "-c", str(d / "nginx.conf"),
                          "-g", f"daemon off; pid {d}/nginx.pid;"], stdout=err, stderr=err)
    deadline = time.monotonic() + 20
    while True:
        if p.poll() is not None:
            err.close()
            pytest.skip(f"nginx did not start: {(tmp_path / 'nginx-stderr.log').read_text()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                c.close()
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            p.kill()
            raise AssertionError("nginx not ready: " + (d / "error.log").read_text())
        time.sleep(0.05)
    try:
        yield port, a, b, d
    finally:
        p.send_signal(signal.SIGQUIT)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        err.close()


def test_two_instances_behind_nginx(nginx_front):
    port, a, b, d = nginx_front
    lines, per_client, clients = 200, 25, 4
    acked, failed = [], []
    lock = threading.Lock()

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(per_client):
            first = (k * 1000 + i) * lines
            body = marked_body(first, lines)
            # chunked, in pieces: nginx passes it on as it arrives
            pieces = (body[j:j + 7000] for j in range(0, len(body), 7000))
            try:
                conn.request("POST", "/", body=pieces, encode_chunked=True,
                             headers={"Transfer-Encoding": "chunked"})
                r = conn.getresponse()
                out = r.read()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    failed.append((first, repr(e)))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            with lock:
                if r.status == 200 and out == ok_response(len(body), lines, 0):
                    acked.append(first)
                else:
                    failed.append((first, r.status, out))
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not failed, failed[:3]
    assert len(acked) == clients * per_client
    fa, fb = a.files("trips-a-*.csv"), b.files("trips-b-*.csv")
    assert len(fa) == 1 and len(fb) == 1 and not a.files("trips-b-*") and not b.files("trips-a-*")
    counts = collections.Counter()
    per_instance = []
    for f in fa + fb:
        data = f.read_bytes()
        assert data.endswith(b"\n")
        n = 0
        for line in data.splitlines():
            head, _, rest = line.partition(b",")
            assert b"," + rest == SUFFIX, line
            counts[int(head)] += 1
            n += 1
        per_instance.append(n)
    assert all(n == 1 for n in counts.values()), [m for m, n in counts.items() if n > 1][:5]
    expected = {m for first in acked for m in range(first, first + lines)}
    assert set(counts) == expected
    # both instances took a share (nginx balances round robin)
    assert min(per_instance) > 0, per_instance
    # streamed through, not spooled: nginx wrote no request body to its temp directory
    assert not list((d / "body").glob("**/*[0-9]")), list((d / "body").glob("**/*"))
    assert "[error]" not in (d / "error.log").read_text(), (d / "error.log").read_text()
