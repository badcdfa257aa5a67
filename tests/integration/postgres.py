"""postgres.py -- a throwaway PostgreSQL 15 (Debian's) on a free loopback port, in its own
temporary directory, for the tests of delivery into PostgreSQL.

PostgreSQL(directory) runs initdb into a temp directory as an unprivileged user (initdb and
postgres refuse root: the tests run as root, so the server runs as `nobody`), starts it with
pg_ctl on 127.0.0.1 and a free port (its unix socket in the temp directory too), and gives
query helpers over psql; restart() is a crash (`pg_ctl stop -m immediate`) and a start;
terminate() kills backends; stop() ends it and removes its directory, keeping the log. The
`postgres` fixture in conftest.py gives one per test module.

PostgreSQL(directory, tls=True) also makes a self-signed certificate for 127.0.0.1 (its SAN an
IP address, so that sslmode=verify-full checks the name) with openssl in the temp directory,
its key 0600 and owned by the server's user, and starts the server with ssl = on; `cert` is
the certificate's path, for sslrootcert. A server without tls refuses TLS (ssl = off).

Authentication: trust for the superuser `postgres`; the role `ingest` (PASSWORD) must give
its password (scram-sha-256), for the tests of ~/.pgpass/PGPASSFILE. The server's TimeZone
is Pacific/Chatham (+13:45 or +12:45), on purpose: a timestamp sent without its zone would
be read wrong there.
"""
import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import free_port

BINDIR = Path("/usr/lib/postgresql/15/bin")
INSTALLED = (BINDIR / "initdb").exists() and shutil.which("psql") is not None
PASSWORD = "s3cret:with'odd\"chars"
TIMEZONE = "Pacific/Chatham"

CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockdir}'
max_connections = 30
shared_buffers = 16MB
fsync = off
timezone = '{tz}'
log_timezone = 'UTC'
logging_collector = off
log_min_messages = warning
ssl = {ssl}
"""

TLS_CONF = """ssl_cert_file = '{cert}'
ssl_key_file = '{key}'
"""

HBA = """
local all postgres trust
host all ingest 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
"""


class PostgresError(Exception):
    pass


class PostgreSQL:
    def __init__(self, directory=None, tls=False, extra_conf=""):
        """extra_conf: lines appended to the configuration (the benchmarks turn fsync back
        on: the tests' fsync = off is for speed, not a setting to measure with)."""
        self.tls = tls
        self.extra_conf = extra_conf
        self.as_root = os.geteuid() == 0
        # pytest's tmp_path (under /tmp/pytest-of-root, 0700) is closed to nobody: a
        # directory of its own, given to the server's user
        self.root = Path(tempfile.mkdtemp(prefix="ndingest-pg-"))
        self.keep = Path(directory) if directory else None
        self.data = self.root / "data"
        self.sockdir = self.root / "sock"
        self.sockdir.mkdir()
        self.log = self.root / "server.log"
        if self.as_root:
            self.uid = pwd.getpwnam("nobody").pw_uid
            self.gid = grp.getgrnam("nogroup").gr_gid
            for p in (self.root, self.sockdir):
                os.chown(p, self.uid, self.gid)
        self.port = None
        self.cert = self.root / "server.crt"
        self.key = self.root / "server.key"
        try:
            if tls:
                self._make_cert()
            self._run([BINDIR / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                       "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            self.start()
            self.psql("CREATE ROLE ingest LOGIN PASSWORD " + quote_literal(PASSWORD),
                      db="postgres")
            self.psql("CREATE DATABASE events OWNER ingest", db="postgres")
        except BaseException:
            self.stop()  # a server half set up is stopped and removed too
            raise

    def _make_cert(self):
        """A self-signed certificate for 127.0.0.1 (CN and SAN), valid a day; the key 0600 and
        the server user's, as PostgreSQL requires of a key it reads."""
        r = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(self.key), "-out", str(self.cert)],
            capture_output=True, text=True)
        if r.returncode:
            raise PostgresError(f"openssl req: exit {r.returncode}: {r.stderr}")
        os.chmod(self.key, 0o600)
        os.chmod(self.cert, 0o644)
        if self.as_root:
            os.chown(self.key, self.uid, self.gid)
            os.chown(self.cert, self.uid, self.gid)

    def _run(self, args, **kw):
        args = [str(a) for a in args]
        if self.as_root:
            kw.update(user=self.uid, group=self.gid, extra_groups=[])
        r = subprocess.run(args, capture_output=True, text=True, cwd="/", **kw)
        if r.returncode:
            raise PostgresError(f"{' '.join(args)}: exit {r.returncode}: {r.stdout}{r.stderr}")
        return r

    def start(self, tries=5):
        for attempt in range(tries):
            if self.port is None or attempt:
                self.port = free_port()
                conf = CONF.format(port=self.port, sockdir=self.sockdir, tz=TIMEZONE,
                                   ssl="on" if self.tls else "off")
                if self.tls:
                    conf += TLS_CONF.format(cert=self.cert, key=self.key)
                conf += self.extra_conf
                (self.data / "postgresql.auto.conf").write_text(conf)
                (self.data / "pg_hba.conf").write_text(HBA)
            try:
                self._run([BINDIR / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                           "start"])
                return
            except PostgresError:
                if attempt == tries - 1 or "could not bind" not in self.log.read_text():
                    raise

    def stop(self, mode="fast", remove=True):
        if self.data.exists():
            try:
                self._run([BINDIR / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60",
                           "stop"])
            except PostgresError:
                pass
        if remove:
            if self.keep is not None and self.log.exists():
                shutil.copy(self.log, self.keep / "server.log")
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self, mode="immediate"):
        """A crash (immediate: no checkpoint, recovery from the WAL at start), then a start on
        the same port."""
        self.stop(mode=mode, remove=False)
        self.start()

    def url(self, user="postgres", db="events", **params):
        q = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}" + (f"?{q}" if q else "")

    def psql(self, sql, db="events", user="postgres"):
        """Runs sql (one or more statements); returns the rows, each a list of text values
        (None for NULL)."""
        env = dict(os.environ, PGTZ="UTC", PGCONNECT_TIMEOUT="10")
        env.pop("PGPASSFILE", None)
        r = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.sockdir), "-p",
             str(self.port), "-U", user, "-d", db, "-A", "-t", "-F", "\x1f", "-P",
             "null=\x1e", "-c", sql], capture_output=True, text=True, env=env)
        if r.returncode:
            raise PostgresError(r.stderr.strip())
        return [[None if v == "\x1e" else v for v in line.split("\x1f")]
                for line in r.stdout.split("\n") if line]

    def query(self, sql, db="events"):
        """The rows of a SELECT as dicts, by row_to_json: numbers exact (numerics and floats
        parsed as text), timestamps in UTC, arrays as lists, NULL as None."""
        rows = self.psql(f"SELECT row_to_json(q) FROM ({sql}) q", db=db)
        return [json.loads(r[0], parse_float=str, parse_int=str) for r in rows]

    def scalar(self, sql, db="events"):
        return self.psql(sql, db=db)[0][0]

    def terminate(self, application_name="ndingest"):
        """pg_terminate_backend on every backend of application_name; how many."""
        return int(self.scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE application_name = {quote_literal(application_name)}", db="postgres"))


def quote_literal(s):
    return "'" + s.replace("'", "''") + "'"


def quote_ident(s):
    return '"' + s.replace('"', '""') + '"'
