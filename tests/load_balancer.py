"""A real HAProxy (Debian's package) in front of several service replicas, for integration tests.

Round robin over the replicas, health-checked on ``/readyz`` every 300 ms, with ``redispatch``
and layer-7 retries (the request is buffered, so one that a replica took and then died on is
sent again to another: every write the service does is idempotent), as a hospital's load
balancer is set up. Loopback only; the process is started and stopped by the test session.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from service_process import LOOPBACK, free_loopback_port


class LoadBalancerError(RuntimeError):
    """HAProxy is missing or did not start (the message says which)."""


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if found is None:
        raise LoadBalancerError("Debian's haproxy is needed (.ci/run installs it)")
    return found


def _config(port: int, backends: Sequence[str]) -> str:
    servers = "\n".join(
        f"    server r{n} {url.removeprefix('http://')} check inter 300ms fall 2 rise 1"
        for n, url in enumerate(backends)
    )
    return f"""global
    maxconn 512

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch 1
    option http-buffer-request
    retry-on conn-failure empty-response junk-response response-timeout 0rtt-rejected

frontend cds
    bind {LOOPBACK}:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
{servers}
"""


class RunningLoadBalancer:
    """``haproxy -db -f <config>`` on a free loopback port; ``base_url`` is what clients call."""

    def __init__(self, backends: Sequence[str], *, startup_timeout: float = 15.0) -> None:
        self._backends = list(backends)
        self._startup_timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.base_url = ""

    def start(self) -> None:
        binary = haproxy_binary()
        self._tmp = tempfile.TemporaryDirectory(prefix="crs-cds-haproxy-")
        port = free_loopback_port()
        config = Path(self._tmp.name) / "haproxy.cfg"
        config.write_text(_config(port, self._backends), encoding="utf-8")
        self._log = (Path(self._tmp.name) / "haproxy.log").open("wb")
        self._proc = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.base_url = f"http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LoadBalancerError(f"haproxy exited: {self.log()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise LoadBalancerError(f"haproxy did not answer within {self._startup_timeout:g} s: {self.log()}")

    def log(self) -> str:
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "haproxy.log"
        return path.read_text(encoding="utf-8", errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
