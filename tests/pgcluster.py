"""A real, private PostgreSQL cluster for the tests: its own temporary data directory, a free
port on 127.0.0.1, password (scram-sha-256) authentication, fsync on.

    cluster = PostgresCluster().start()     # initdb the first time, then the server
    url = cluster.create_database()         # a fresh database owned by the hermes role
    cluster.stop(); cluster.start()         # a clean restart: same data, same port
    cluster.kill(); cluster.start()         # an abrupt outage (SIGKILL), then crash recovery
    cluster.destroy()                       # stopped, temporary directory removed

PostgreSQL refuses to run as root: as root the cluster belongs to an unprivileged system user
(USER, created when missing; ``nobody`` if it cannot be). The postmaster runs under a small
reaper process (REAPER below): when the postmaster is killed its orphaned children become the
reaper's, which waits for them all, so "the reaper exited" is the event that every process of the
cluster is gone, and none is left as a zombie. If the test process dies without tearing down, the
reaper is told (parent-death signal), shuts the server down and removes the directory.

Needs the server binaries (Debian: the postgresql package; HERMES_PG_BINDIR to choose them) and
psycopg; without them the constructor raises PostgresUnavailable, which the fixtures turn into a
skip with the reason.
"""

import glob
import os
import pwd
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
import gevent.subprocess

from .support import free_port, t

#: The password of both roles: hermes (the application's) and postgres (the superuser).
PASSWORD = "s3cret-pg-Passw0rd"
#: The application's role and database.
ROLE = "hermes"
#: The superuser initdb creates.
SUPERUSER = "postgres"
#: The unprivileged user that owns the cluster when the tests run as root.
USER = os.environ.get("HERMES_PG_USER", "hermes-pg")

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "'64MB'",
    "fsync": "on",  # the figures must be real: commits reach the disk
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}

# Runs the postmaster (argv after the tmp dir) as its child, as a child subreaper: waits for every
# process of the cluster, exits with the postmaster's status once they are all gone. Its parent's
# death (the test process, killed) brings a fast shutdown of the server and removes the directory.
REAPER = r"""
import ctypes, os, shutil, signal, sys
parent, tmp, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)                          # PR_SET_CHILD_SUBREAPER
libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)         # PR_SET_PDEATHSIG
orphaned = []
if os.getppid() != parent:
    sys.exit(1)
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
def parent_died(signum, frame):
    orphaned.append(signum)
    try:
        os.kill(pid, signal.SIGINT)                 # fast shutdown
    except ProcessLookupError:
        pass
signal.signal(signal.SIGTERM, parent_died)
status = 0
while True:
    try:
        child, st = os.waitpid(-1, 0)
    except ChildProcessError:
        break
    if child == pid:
        status = os.waitstatus_to_exitcode(st)
if orphaned:
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(status if status >= 0 else 128 - status)
"""


class PostgresUnavailable(Exception):
    """PostgreSQL cannot run here (binaries or psycopg missing); the fixtures skip with this."""


class PostgresError(AssertionError):
    """The cluster failed to start or stop; the message ends with the server log's tail."""


def find_bindir() -> Path:
    """The directory of initdb and postgres: HERMES_PG_BINDIR, pg_config --bindir, Debian's
    /usr/lib/postgresql/<newest>/bin, or initdb on PATH."""
    candidates = []
    if os.environ.get("HERMES_PG_BINDIR"):
        candidates.append(Path(os.environ["HERMES_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = gevent.subprocess.run([pg_config, "--bindir"], stdin=gevent.subprocess.DEVNULL,
                                        capture_output=True, timeout=t(10)).stdout
            candidates.append(Path(out.decode().strip()))
        except (OSError, gevent.subprocess.TimeoutExpired):
            pass

    def version(path: str):
        return [int(n) for n in re.findall(r"\d+", path)]

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "postgres").is_file():
            return path
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, postgres) not found: install the postgresql "
                              "package (Debian), or set HERMES_PG_BINDIR")


def _system_user() -> pwd.struct_passwd:
    """The unprivileged owner of the cluster when running as root; created when missing."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        gevent.subprocess.run([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                               "/usr/sbin/nologin", "--user-group", USER], stdin=gevent.subprocess.DEVNULL,
                              capture_output=True, timeout=t(30))
    except (OSError, gevent.subprocess.TimeoutExpired):
        pass
    try:
        return pwd.getpwnam(USER)  # created now, or by a concurrent session
    except KeyError:
        return pwd.getpwnam("nobody")


def _children(ppid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == ppid:
                found.append(int(entry))
    return found


class PostgresCluster:
    """One PostgreSQL server with its own data directory; see the module's docstring."""

    def __init__(self, port: int | None = None) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise PostgresUnavailable(f"psycopg is not installed: {exc}") from None
        self.bindir = find_bindir()
        self.port = port or free_port()
        self.as_root = os.geteuid() == 0
        self._setpriv = shutil.which("setpriv")
        self._runuser = shutil.which("runuser")
        if self.as_root:
            if not (self._setpriv or self._runuser):
                raise PostgresUnavailable("running as root, and neither setpriv nor runuser exists to run "
                                          "PostgreSQL as an unprivileged user")
            self.user = _system_user()
        else:
            self.user = pwd.getpwuid(os.geteuid())
        # The socket path (dir + /.s.PGSQL.<port>) must stay under ~100 bytes, and the cluster's user
        # must reach it: a long or private TMPDIR falls back to /tmp.
        base = tempfile.gettempdir()
        if len(base) > 60 or (self.as_root and not self._reachable(base)):
            base = "/tmp"
        # tmp (ours: the reaper script, the log) / pg (the cluster user's: socket, data): the
        # server can write nothing that the test process later runs.
        self.tmp = Path(tempfile.mkdtemp(prefix="hermes-pg-", dir=base))
        os.chmod(self.tmp, 0o711)
        self.home = self.tmp / "pg"
        self.home.mkdir(mode=0o700)
        if self.as_root:
            os.chown(self.home, self.user.pw_uid, self.user.pw_gid)
        self.data = self.home / "data"
        self.logfile = self.tmp / "postgres.log"
        (self.tmp / "reaper.py").write_text(REAPER)
        self.url = self._url(ROLE, PASSWORD, ROLE)
        self.admin_url = self._url(SUPERUSER, PASSWORD, "postgres")
        self._reaper: Any = None  # the reaper (gevent.subprocess.Popen) while started
        self._pid: int | None = None
        self._destroyed = False
        #: Seconds the last initdb and start() took (for reports).
        self.timings: dict[str, float] = {}

    # -- URLs and state ----------------------------------------------------------------

    def _url(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def url_for(self, database: str) -> str:
        """The hermes role's URL for another database of this cluster."""
        return self._url(ROLE, PASSWORD, database)

    @property
    def running(self) -> bool:
        return self._reaper is not None and self._reaper.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while running."""
        return self._pid if self.running else None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def _failure(self, what: str) -> PostgresError:
        return PostgresError(f"{what}\n--- {self.logfile} (tail) ---\n{self.log_tail()}")

    # -- processes -----------------------------------------------------------------------

    @staticmethod
    def _reachable(path: str) -> bool:
        """Every directory down to ``path`` is searchable by others (the cluster's user)."""
        p = Path(path).resolve()
        return all(os.stat(d).st_mode & 0o001 for d in [p, *p.parents])

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _as_user(self, args: list[str], pdeathsig: str | None = None) -> list[str]:
        """``args`` run as the cluster's user (exec'ed in place by setpriv: the PID stays the same)."""
        if self._setpriv:
            prefix = [self._setpriv]
            if pdeathsig:
                prefix += ["--pdeathsig", pdeathsig]
            if self.as_root:
                prefix += ["--reuid", str(self.user.pw_uid), "--regid", str(self.user.pw_gid), "--init-groups"]
            return prefix + ["--"] + args
        if self.as_root and self._runuser:
            return [self._runuser, "-u", self.user.pw_name, "--"] + args
        return args

    def _run(self, args: list[str], timeout: float) -> str:
        """Run a short command as the cluster's user, stopped by its PID if it overruns."""
        proc = gevent.subprocess.Popen(self._as_user(args), cwd=str(self.tmp), env=self._env(),
                                       stdin=gevent.subprocess.DEVNULL, stdout=gevent.subprocess.PIPE,
                                       stderr=gevent.subprocess.STDOUT)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except gevent.subprocess.TimeoutExpired:
            raise PostgresError(f"{Path(args[0]).name} did not finish within {timeout:.0f}s") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(t(5))
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise PostgresError(f"{' '.join(args)} exited {proc.returncode}:\n{text[-3000:]}")
        return text

    def _initdb(self) -> None:
        began = time.monotonic()
        pwfile = self.home / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        try:
            self._run([str(self.bindir / "initdb"), "-D", str(self.data), "--no-sync", "-A", "trust",
                       "--auth-host=scram-sha-256", f"--username={SUPERUSER}", f"--pwfile={pwfile}",
                       "-E", "UTF8", "--locale=C"], t(120))
        finally:
            pwfile.unlink()
        settings = dict(SETTINGS, port=str(self.port), unix_socket_directories=f"'{self.home}'")
        with open(self.data / "postgresql.conf", "a") as conf:  # appended: the last setting wins
            conf.write("\n# tests/pgcluster.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        with open(self.data / "pg_hba.conf", "w") as hba:  # rewritten in place: keeps its owner
            hba.write(f"local all {SUPERUSER} trust\n"
                      "host all all 127.0.0.1/32 scram-sha-256\n")
        self.timings["initdb"] = time.monotonic() - began

    def _bootstrap(self) -> None:
        from psycopg import sql

        self.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(PASSWORD)), url=self.admin_url)
        self.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(ROLE), sql.Identifier(ROLE)),
                     url=self.admin_url)

    def start(self) -> "PostgresCluster":
        """initdb the first time, then start the server; returns once it accepts connections."""
        import psycopg

        if self._destroyed:
            raise PostgresError("this cluster was destroyed")
        if self.running:
            return self
        self._pid = None
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self._initdb()
        began = time.monotonic()
        postgres = self._as_user([str(self.bindir / "postgres"), "-D", str(self.data)], pdeathsig="SIGINT")
        with open(self.logfile, "ab") as log:
            self._reaper = gevent.subprocess.Popen(
                [sys.executable, str(self.tmp / "reaper.py"), str(os.getpid()), str(self.tmp)] + postgres,
                cwd=str(self.tmp), env=self._env(), stdin=gevent.subprocess.DEVNULL, stdout=log,
                stderr=gevent.subprocess.STDOUT, start_new_session=True)  # ^C in a terminal is pytest's
        timeout = t(60)
        deadline = began + timeout
        last = None
        while True:
            if self._reaper.poll() is not None:
                raise self._failure(f"postgres exited with status {self._reaper.returncode} while starting")
            try:
                psycopg.connect(self.admin_url, connect_timeout=1).close()
                break
            except psycopg.OperationalError as exc:
                last = exc
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"postgres did not accept connections within {timeout:.0f}s: {last}")
            gevent.sleep(0.05)
        self._pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self.timings["start"] = time.monotonic() - began
        if fresh:
            self._bootstrap()
        return self

    def _wait_gone(self, timeout: float) -> bool:
        """Wait for the reaper: it exits once every process of the cluster is gone."""
        try:
            self._reaper.wait(timeout)
            return True
        except gevent.subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        """A clean shutdown (SIGINT: pg_ctl stop -m fast), bounded; SIGKILL if it overruns.
        The data directory stays: start() brings the same data back on the same port."""
        if not self.running:
            return
        if self._pid is None:  # not started up yet
            self.kill()
            return
        try:
            os.kill(self._pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        if not self._wait_gone(t(30)):
            self.kill()
            raise self._failure(f"postgres did not shut down within {t(30):.0f}s (killed)")

    def kill(self) -> None:
        """An abrupt outage: SIGKILL the postmaster by its PID. Its children notice and exit; any
        left after a few seconds are killed too. start() afterwards runs crash recovery."""
        if not self.running:
            return
        for pid in [self._pid] if self._pid else _children(self._reaper.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._wait_gone(t(5)):
            return
        for pid in _children(self._reaper.pid):  # the orphans, now the reaper's
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self._wait_gone(t(10)):
            self._reaper.kill()
            self._reaper.wait(t(5))
            raise self._failure("the processes of the killed postgres did not exit")

    def destroy(self) -> None:
        """Stop the server and remove the temporary directory (data and log)."""
        if self._destroyed:
            return
        try:
            self.stop()
        finally:
            self._destroyed = True
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- SQL -------------------------------------------------------------------------------

    def execute(self, sql, params=None, url: str | None = None) -> list[tuple]:
        """Run one statement (autocommit) against ``url`` (default: the hermes database) in a
        connection of its own; the rows it returns, [] when none."""
        import psycopg

        with psycopg.connect(url or self.url, autocommit=True, connect_timeout=max(1, round(t(10)))) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

    def create_database(self, name: str | None = None) -> str:
        """A fresh database owned by the hermes role (a unique name when None); its URL."""
        from psycopg import sql

        name = name or f"test_{uuid.uuid4().hex[:12]}"
        self.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)),
                     url=self.admin_url)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        from psycopg import sql

        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
                     url=self.admin_url)
