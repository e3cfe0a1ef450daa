"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temp folder, pg_ctl start on a
free localhost port, trust authentication, one fresh database per test (CREATE DATABASE), stop at
the end. The server refuses to run as root, so as root the binaries run as `nobody` (runuser).

    server = PostgresServer.start()          # PostgresUnavailable if there are no binaries
    url = server.create_database()           # postgresql+psycopg://backdrop@127.0.0.1:PORT/t_1
    server.restart()                         # pg_ctl restart -m fast: every connection is cut
    server.pause(); server.resume()          # down for a while, then up again
    server.drop_database(url); server.stop()

Binaries: initdb/pg_ctl on PATH, else the newest /usr/lib/postgresql/*/bin (Debian layout).
Settings are for speed (fsync off: a test server holds nothing worth keeping).
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from browser_helpers import free_port   # the one free-port helper of the test servers

USER = "backdrop"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine (or no psycopg): tests skip, CI fails."""


def find_bindir() -> Optional[Path]:
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return Path(found[-1]).parent if found else None


class PostgresServer:
    def __init__(self, bindir: Path, root: Path, port: int):
        self.bindir, self.root, self.port = bindir, root, port
        self.data = root / "data"
        self.log = root / "server.log"
        self._as = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        self._names = itertools.count(1)

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def start(cls, *, durable: bool = False) -> "PostgresServer":
        """initdb + start. durable=False (tests): fsync, synchronous_commit and full-page writes
        off; durable=True (benchmarks): PostgreSQL's defaults for those."""
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise PostgresUnavailable("psycopg is not installed (pip install 'psycopg[binary]')") from e
        bindir = find_bindir()
        if bindir is None:
            raise PostgresUnavailable("no PostgreSQL binaries (initdb/pg_ctl not on PATH nor under "
                                      "/usr/lib/postgresql/*/bin; apt-get install postgresql)")
        root = Path(tempfile.mkdtemp(prefix="backdrop-pg-"))
        server = cls(bindir, root, free_port())
        if os.geteuid() == 0:
            shutil.chown(root, "nobody", "nogroup")
        try:
            server._run("initdb", "-D", str(server.data), "-U", USER, "--auth=trust",
                        "--encoding=UTF8", "--locale=C", *([] if durable else ["--no-sync"]))
            conf = (f"port = {server.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{root}'\nmax_connections = 200\n"
                    "shared_buffers = 128MB\n")
            if not durable:
                conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            with open(server.data / "postgresql.conf", "a") as f:   # as root: file stays nobody's
                f.write(conf)
            server._pg_ctl("start")
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run([*self._as, str(self.bindir / tool), *args], capture_output=True,
                              text=True, timeout=timeout, cwd=self.root)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}): "
                               f"{proc.stderr.strip() or proc.stdout.strip()}\n{log}")
        return proc.stdout

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  *extra)

    def restart(self) -> None:
        """Fast restart: the server cuts every connection (open transactions roll back)."""
        self._pg_ctl("restart", "-m", "fast")

    def pause(self) -> None:
        """Shut the server down (fast) without removing it; resume() starts it again."""
        self._pg_ctl("stop", "-m", "fast")

    def resume(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self._pg_ctl("stop", "-m", "immediate")
            except Exception:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -----------------------------------------------------------------------------
    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres",
                             autocommit=True, connect_timeout=10) as con:
            con.execute(sql)

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[-1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_until_up(server: PostgresServer, timeout: float = 30) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(host="127.0.0.1", port=server.port, user=USER, dbname="postgres",
                            connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
