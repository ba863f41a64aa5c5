"""A throwaway PostgreSQL server for tests: initdb in a temporary directory, listening only on a
Unix socket in that directory, stopped and deleted afterwards.

PostgreSQL refuses to run as root, so as root the cluster is created and run as the ``postgres``
system user (Debian's package creates it); otherwise as the current user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed (CI installs them, see .ci/run)."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if versions:
        return str(versions[-1])
    raise PostgresUnavailable(f"{name} not found: install PostgreSQL (Debian package 'postgresql')")


class RunningPostgres:
    def __init__(self) -> None:
        self._tmp: Path | None = None
        self._as_user: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        if self._tmp is None:
            raise RuntimeError("not started")
        user = self._as_user or pwd.getpwuid(os.geteuid()).pw_name
        return f"postgresql://{user}@/postgres?host={self._tmp}"

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_user is not None:
            command = ["runuser", "-u", self._as_user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")

    def start(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="crs-cds-pg-"))
        if self._as_user is not None:
            entry = pwd.getpwnam(self._as_user)
            os.chown(self._tmp, entry.pw_uid, entry.pw_gid)
        data = self._tmp / "data"
        self._run(
            _binary("initdb"), "-D", str(data), "-A", "trust", "-U", self._as_user or pwd.getpwuid(os.geteuid()).pw_name
        )
        self.resume()

    def resume(self) -> None:
        """Start the server process on the existing data directory (after ``pause``)."""
        if self._tmp is None:
            raise RuntimeError("not started")
        self._run(
            _binary("pg_ctl"),
            "-D",
            str(self._tmp / "data"),
            "-l",
            str(self._tmp / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-c listen_addresses='' -k {self._tmp} -c fsync=on",
            "start",
        )

    def pause(self) -> None:
        """Stop the server process, keeping its data: what a maintenance restart looks like."""
        if self._tmp is None:
            raise RuntimeError("not started")
        self._run(_binary("pg_ctl"), "-D", str(self._tmp / "data"), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """``pg_ctl restart``: every open connection is cut."""
        self.pause()
        self.resume()

    def stop(self) -> None:
        if self._tmp is None:
            return
        try:
            self._run(_binary("pg_ctl"), "-D", str(self._tmp / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
