"""The CDS Hooks service run as a real uvicorn process (``crs-cds serve``) for integration tests.

Why a process and not TestClient: the hook must be exercised exactly as deployed (settings from
the environment, the lifespan's shared HTTP client, real sockets, JSON logs on stderr), so tests
can also check what the service writes to its log, e.g. that no access token ever appears there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

LOOPBACK = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
_PORT_ATTEMPTS = 3
_LOG_TAIL_CHARS = 6000


class ServiceProcessError(RuntimeError):
    """The service could not be started (the message includes its stderr)."""


def free_loopback_port() -> int:
    """A port the OS says is free now (a small race remains; start() retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class RunningService:
    """Starts ``python -m cds_hooks.cli serve`` on a free loopback port and stops it.

    ``env`` is added to a copy of the current environment from which every ``CRS_CDS_*`` variable
    was removed, so a developer's shell cannot change what a test runs. Use as a context manager
    or call start()/stop(); ``log()`` returns the tail of the process's stdout and stderr.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        python: str = sys.executable,
    ) -> None:
        self._env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._python = python
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """The service root without a trailing slash, e.g. http://127.0.0.1:PORT."""
        if self._base_url is None:
            raise ServiceProcessError("service is not running; call start() first")
        return self._base_url

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Launch the service and block until ``/healthz`` answers 200 (bounded wait)."""
        if self._proc is not None:
            raise ServiceProcessError("service already started")
        self._tmp = tempfile.TemporaryDirectory(prefix="crs-cds-service-")
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._launch(free_loopback_port())
                if self._wait_until_ready(last_attempt=attempt == _PORT_ATTEMPTS):
                    return
                self._stop_process()
        except BaseException:
            self.stop()
            raise

    def _launch(self, port: int) -> None:
        assert self._tmp is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRS_CDS_")}
        env.update(self._env)
        env.setdefault("CRS_CDS_DATABASE_URL", f"sqlite:///{Path(self._tmp.name) / 'crs-cds.sqlite3'}")
        env["PYTHONUNBUFFERED"] = "1"
        self._log_path = Path(self._tmp.name) / f"service-{port}.log"
        self._log_file = self._log_path.open("wb")
        self._base_url = f"http://{LOOPBACK}:{port}"
        self._proc = subprocess.Popen(
            [self._python, "-m", "cds_hooks.cli", "serve", "--host", LOOPBACK, "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def _wait_until_ready(self, *, last_attempt: bool) -> bool:
        """True once /healthz answers 200; False if the port was taken; raises otherwise."""
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        url = f"{self.base_url}/healthz"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = self.log()
                if not last_attempt and "address already in use" in output.lower():
                    return False
                raise ServiceProcessError(
                    f"service exited with code {self._proc.returncode} before answering. Output:\n{output}"
                )
            try:
                response = httpx.get(url, timeout=2.0)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if response.status_code == 200:
                return True
            raise ServiceProcessError(f"{url} answered {response.status_code}. Output:\n{self.log()}")
        raise ServiceProcessError(
            f"service did not answer {url} within {self._startup_timeout:g}s. Output:\n{self.log()}"
        )

    def log(self) -> str:
        """The tail of the process's combined stdout/stderr (for failure messages)."""
        return self.full_log()[-_LOG_TAIL_CHARS:] or "<no output>"

    def full_log(self) -> str:
        """Everything the process wrote so far (to check that no secret was logged)."""
        if self._log_file is not None:
            self._log_file.flush()
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def _stop_process(self) -> None:
        """Terminate (uvicorn shuts down cleanly on SIGTERM), killing it if it hangs."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self._stop_timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._base_url = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown hooks run (for durability tests)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=self._stop_timeout)

    def stop(self) -> None:
        """Stop the process and delete its log; safe to call more than once."""
        self._stop_process()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._log_path = None
