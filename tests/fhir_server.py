"""A real FHIR R4 server (sekmet-fhir) run as a subprocess for integration tests.

Why a subprocess and not an in-process app or a mock: the CDS service must be tested against the
HTTP behaviour of an actual FHIR server (search semantics, paging links, _include), over a real
socket, exactly as it will talk to an EHR's server in production.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

SERVER_MODULE = "sekmet"
SERVER_REQUIREMENT = "sekmet-fhir==0.1.1"
LOOPBACK = "127.0.0.1"
_PORT_ATTEMPTS = 3
_LOG_TAIL_CHARS = 6000


class FhirServerError(RuntimeError):
    """The FHIR server could not be started or refused test data (message includes the server log)."""


def _free_loopback_port() -> int:
    """Ask the OS for a free loopback port (a small race remains; start() retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _fhir_version(response: httpx.Response) -> str:
    """fhirVersion of a CapabilityStatement response, or "" if it is not one."""
    if response.status_code != 200:
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("fhirVersion", "")) if isinstance(body, dict) else ""


class RunningFhirServer:
    """Starts sekmet-fhir on a free loopback port with a throw-away SQLite file, and stops it.

    Use as a context manager or call start()/stop(). Data persists for the server's lifetime, so
    tests sharing one server should use their own resource ids.
    """

    def __init__(
        self,
        *,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        python: str = sys.executable,
        server_auth: Mapping[str, Any] | None = None,
        load_token: str | None = None,
    ) -> None:
        """``server_auth`` is sekmet's ``server_auth`` block (default: no authentication); with
        one, ``load_token`` is a static bearer it accepts, which :meth:`load` sends."""
        self._server_auth = dict(server_auth) if server_auth is not None else {"types": ["none"]}
        self._load_token = load_token
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._python = python
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._client: httpx.Client | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """FHIR base URL without a trailing slash, e.g. http://127.0.0.1:PORT/fhir."""
        if self._base_url is None:
            raise FhirServerError("FHIR server is not running; call start() first")
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
        """Launch the server and block until it serves its CapabilityStatement (bounded wait)."""
        if self._proc is not None:
            raise FhirServerError("FHIR server already started")
        if importlib.util.find_spec(SERVER_MODULE) is None:
            raise FhirServerError(
                f"The FHIR test server package is not installed in {sys.executable}. "
                f"Install the project's test dependencies (requirement: {SERVER_REQUIREMENT!r})."
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="fhir-server-")
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self._launch(_free_loopback_port())
                if self._wait_until_ready(last_attempt=attempt == _PORT_ATTEMPTS):
                    self._client = httpx.Client(timeout=30.0)
                    return
                self._stop_process()
        except BaseException:
            self.stop()
            raise

    def _launch(self, port: int) -> None:
        """Write a settings file and spawn `sekmet serve` bound to loopback only."""
        assert self._tmp is not None
        workdir = Path(self._tmp.name)
        base_url = f"http://{LOOPBACK}:{port}/fhir"
        settings = {
            "base_url": base_url,  # used for fullUrl and paging links, so it must match the port
            "host": LOOPBACK,
            "port": port,
            "db_path": str(workdir / f"fhir-{port}.sqlite"),
            "data_dir": str(workdir / "data"),
            "own_private_key_path": str(workdir / "keys" / "private.pem"),
            "server_auth": self._server_auth,
            "validation": {"inbound": "strict"},  # malformed fixtures fail loudly at load time
            "simulator": {"enabled": False},  # otherwise it invents resources after some writes
            "log_inbound": False,  # no per-request body logging into the database
        }
        config = workdir / f"settings-{port}.yaml"
        config.write_text(json.dumps(settings), encoding="utf-8")  # JSON is valid YAML
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}  # env beats the file
        env["PYTHONUNBUFFERED"] = "1"
        self._log_path = workdir / f"server-{port}.log"
        self._log = self._log_path.open("wb")
        self._base_url = base_url
        self._proc = subprocess.Popen(
            [
                self._python,
                "-m",
                "sekmet.cli",
                "serve",
                "--config",
                str(config),
                "--host",
                LOOPBACK,
                "--port",
                str(port),
            ],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _wait_until_ready(self, *, last_attempt: bool) -> bool:
        """True once /metadata answers as FHIR 4.0.x; False if the port was taken; raises otherwise."""
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        url = f"{self.base_url}/metadata"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = self.server_log()
                if not last_attempt and "address already in use" in log.lower():
                    return False
                raise FhirServerError(
                    f"FHIR server exited with code {self._proc.returncode} before answering. Server output:\n{log}"
                )
            try:
                response = httpx.get(url, timeout=2.0)
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            version = _fhir_version(response)
            if version.startswith("4.0"):
                return True
            raise FhirServerError(
                f"{url} answered {response.status_code} with fhirVersion {version!r}, expected R4 "
                f"(4.0.x). Server output:\n{self.server_log()}"
            )
        raise FhirServerError(
            f"FHIR server did not answer {url} within {self._startup_timeout:g}s. Server output:\n{self.server_log()}"
        )

    def server_log(self) -> str:
        """The tail of the server's combined stdout/stderr, for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return "<no server output>"
        text = self._log_path.read_text(encoding="utf-8", errors="replace")
        return text[-_LOG_TAIL_CHARS:] or "<no server output>"

    def load(self, resources: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store resources with their own ids in one atomic transaction Bundle (PUT Type/id).

        Returns the stored resources as the server echoes them (with meta.versionId etc.).
        """
        if self._client is None:
            raise FhirServerError("FHIR server is not running; call start() first")
        entries: list[dict[str, Any]] = []
        for resource in resources:
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if not isinstance(rtype, str) or not isinstance(rid, str) or not rid:
                raise ValueError(f"load() needs resourceType and id on every resource: {resource!r}")
            entries.append(
                {
                    "resource": dict(resource),
                    "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
                }
            )
        if not entries:
            return []
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        response = self._client.post(
            self.base_url,
            json=bundle,
            headers={
                "Content-Type": "application/fhir+json",
                "Accept": "application/fhir+json",
                **({"Authorization": f"Bearer {self._load_token}"} if self._load_token else {}),
            },
        )
        if response.status_code != 200:
            raise FhirServerError(f"Transaction rejected with HTTP {response.status_code}: {response.text}")
        stored: list[dict[str, Any]] = []
        for entry in response.json().get("entry", []):
            status = str(entry.get("response", {}).get("status", ""))
            if not status.startswith(("200", "201")):
                raise FhirServerError(f"Transaction entry failed with {status!r}: {json.dumps(entry)}")
            stored.append(entry["resource"])
        return stored

    def _stop_process(self) -> None:
        """Terminate the server, killing it if it does not exit within stop_timeout."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self._stop_timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._base_url = None

    def stop(self) -> None:
        """Stop the server and delete its database and logs; safe to call more than once."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._stop_process()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._log_path = None
