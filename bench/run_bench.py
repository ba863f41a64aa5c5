"""One-command benchmark of the CRS CDS Hooks service against a bare FastAPI baseline (issue 5).

``python bench/run_bench.py`` (or ``make bench``) starts ``crs-cds serve`` and ``bench.baseline_app``
as real processes under the same uvicorn settings, sends each the same patient-view requests over
loopback HTTP (sequentially and with 8 concurrent clients) at ~100, ~550 and ~5,000 resources, and
reports p50/p95/p99 latency, requests/s, the service/baseline ratio and each server's peak RSS. It
then times ``crs-cds grade``: its start-up (a 10-resource file) and its rate on a 50,000-resource
NDJSON file. Why a baseline: latency over HTTP on a shared machine means little alone; the ratio
to a server that only parses the same body says what the grading itself costs.

Why interleaved (issue 11): on a shared machine the load drifts within seconds, so measuring the
baseline first and the service after let the drift land on one side only. Every measured call to
the baseline is followed by the same call to the service (A B A B ...; the concurrent phase
alternates in short rounds), so drift hits both alike and the ratio stays meaningful.
Every response is checked (status 200 and a card): a run that measured errors would be
worthless, so it stops instead. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/run_bench.py` puts bench/, not the project, on the path

from bench.generate import AT_ISO, MIN_RESOURCES, iter_sizes, request_body, write_ndjson  # noqa: E402

LOOPBACK = "127.0.0.1"
SERVICE_PATH = "/cds-services/crs-grade"
HEADERS = {"content-type": "application/json", "accept": "application/json"}
GOAL_RATIOS: dict[int, float] = {100: 2.5, 550: 2.0, 5000: 1.6}
"""Issue 11: most service p50 / baseline p50 at about this many resources (the nearest size measured)."""
GOAL_CLI_RESOURCES_PER_S = 100_000.0
"""Issue 11: ``crs-cds grade`` on NDJSON, after start-up."""
GOAL_CLI_STARTUP_S = 0.4
CONCURRENT_ROUNDS = 4
"""The concurrent phase alternates baseline and service in this many rounds each."""
EXPECTED_GRADE = 3
"""What the generated patient grades at: a card with another grade means the data were misread."""
GRADING_EXTENSION = "crs-cds-hooks.grading"
STARTUP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 300.0
_PORT_ATTEMPTS = 3


class BenchError(RuntimeError):
    """The benchmark cannot produce a meaningful number (a server failed or answered wrongly)."""


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(workdir: Path) -> dict[str, str]:
    """The environment without the user's ``CRS_CDS_*`` settings, so the run is reproducible.

    Authentication is off (the benchmark has no JWT issuer) and the card store is a file in the
    run's temporary directory: the service still writes each issued card, as deployed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRS_CDS_")}
    env["CRS_CDS_ALLOW_UNAUTHENTICATED"] = "true"
    env["CRS_CDS_DATABASE_URL"] = f"sqlite:///{workdir / 'bench-cards.sqlite3'}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Server:
    """One server process on a loopback port; ``argv`` ends with ``--port`` (the port is appended)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        """Launch and wait for ``/healthz`` (retrying on another port if this one was taken)."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            port = free_port()
            self.url = f"http://{LOOPBACK}:{port}"
            self._log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                [*self.argv, str(port)],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            if self._wait_ready(last_attempt=attempt == _PORT_ATTEMPTS):
                return
            self.stop()
        raise BenchError(f"{self.name}: no free port after {_PORT_ATTEMPTS} attempts")

    def _wait_ready(self, *, last_attempt: bool) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    if not last_attempt and "address already in use" in self.log_tail().lower():
                        return False
                    raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    response = client.get(f"{self.url}/healthz")
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                if response.status_code == 200:
                    return True
                raise BenchError(f"{self.name} /healthz answered {response.status_code}:\n{self.log_tail()}")
        raise BenchError(f"{self.name} did not answer /healthz within {STARTUP_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        if self._log is not None:
            self._log.flush()
        if not self.log_path.exists():
            return "<no output>"
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:] or "<no output>"

    def proc_status(self, field_name: str) -> int | None:
        """A ``kB`` field of ``/proc/<pid>/status`` (VmHWM = peak RSS), or None off Linux."""
        if self.proc is None:
            return None
        try:
            lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1])
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU the server process has used so far (``/proc/<pid>/stat``), or None off Linux."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        # utime and stime are fields 14 and 15 of stat(5); after the ")" they are at 11 and 12.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def loaded_modules(self, names: Sequence[str]) -> dict[str, bool] | None:
        """Which of ``names`` (e.g. uvloop, httptools) the process has mapped: proof both servers match."""
        if self.proc is None:
            return None
        try:
            maps = Path(f"/proc/{self.proc.pid}/maps").read_text()
        except OSError:
            return None
        return {name: f"/{name}/" in maps for name in names}

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down cleanly), then kill if it hangs; safe to call twice."""
        proc, self.proc = self.proc, None
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


# -- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    req_per_s: float


def summarize(latencies: Sequence[float], wall_s: float) -> Stats:
    """Percentiles by linear interpolation between order statistics (``statistics.quantiles`` inclusive)."""
    ms = sorted(x * 1000 for x in latencies)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return Stats(
        n=len(ms),
        p50_ms=cuts[49],
        p95_ms=cuts[94],
        p99_ms=cuts[98],
        mean_ms=statistics.fmean(ms),
        max_ms=ms[-1],
        req_per_s=len(ms) / wall_s,
    )


def check_response(server: str, status: int, content: bytes) -> dict[str, Any]:
    """The first card, or BenchError: a 200 with at least one card is the only valid answer."""
    if status != 200:
        raise BenchError(f"{server} answered {status}: {content[:500]!r}")
    try:
        payload = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise BenchError(f"{server} answered 200 with a body that is not JSON: {content[:200]!r}") from None
    cards = payload.get("cards") if isinstance(payload, dict) else None
    if not isinstance(cards, list) or not cards or not isinstance(cards[0], dict) or "summary" not in cards[0]:
        raise BenchError(f"{server} answered 200 without a card: {content[:500]!r}")
    card: dict[str, Any] = cards[0]
    return card


def card_grade(card: dict[str, Any]) -> int | None:
    results = (card.get("extension") or {}).get(GRADING_EXTENSION) or []
    grade = results[0].get("grade") if results and isinstance(results[0], dict) else None
    return grade if isinstance(grade, int) else None


def post_once(client: httpx.Client, server: str, url: str, body: bytes) -> tuple[float, dict[str, Any]]:
    """One call: (latency in s, first card); the client's check is outside the latency."""
    start = time.perf_counter()
    response = client.post(url, content=body, headers=HEADERS)
    latency = time.perf_counter() - start
    return latency, check_response(server, response.status_code, response.content)


def run_interleaved(
    client: httpx.Client, targets: Sequence[tuple[str, str]], body: bytes, n: int
) -> dict[str, tuple[Stats, list[float]]]:
    """``n`` rounds, each calling every target once in turn (A B A B ...) on one keep-alive client.

    The order within a round alternates (A B, then B A) so neither server always runs right
    after the other's work. Requests/s is n / the sum of that server's own latencies.
    """
    latencies: dict[str, list[float]] = {name: [] for name, _ in targets}
    for i in range(n):
        for name, url in targets if i % 2 == 0 else list(reversed(targets)):
            latency, _ = post_once(client, name, url, body)
            latencies[name].append(latency)
    return {name: (summarize(lat, sum(lat)), lat) for name, lat in latencies.items()}


def cpu_ms_per_call(before: float | None, after: float | None, calls: int) -> float | None:
    """A server's CPU time per call over a phase (its process's CPU delta / calls), or None.

    Why beside the latency: on a shared machine other processes stretch wall time, and stretch
    the longer job more; the CPU a call costs is what the design controls. Resolution is the
    clock tick (10 ms) over the whole phase, so it is meaningful with tens of calls or more.
    """
    if before is None or after is None or calls < 1:
        return None
    return (after - before) * 1000 / calls


async def _run_concurrent(server: str, url: str, body: bytes, n: int, concurrency: int) -> tuple[list[float], float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=REQUEST_TIMEOUT_S) as client:
        # Open the connections first (cheap GETs), so connection set-up is not in the numbers.
        base = url.removesuffix(SERVICE_PATH)
        await asyncio.gather(*(client.get(f"{base}/healthz") for _ in range(concurrency)))
        remaining = n
        latencies: list[float] = []

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                response = await client.post(url, content=body, headers=HEADERS)
                latencies.append(time.perf_counter() - start)
                check_response(server, response.status_code, response.content)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return latencies, wall


def run_concurrent_interleaved(
    targets: Sequence[tuple[str, str]], body: bytes, n: int, concurrency: int, rounds: int = CONCURRENT_ROUNDS
) -> dict[str, Stats]:
    """``n`` calls per target from ``concurrency`` workers, in ``rounds`` alternating rounds.

    Each round sends about n / rounds calls to one target, then to the next, so load drift
    reaches both; req/s = calls / the summed wall time of that target's rounds.
    """
    rounds = max(1, min(rounds, n))
    per_round = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    latencies: dict[str, list[float]] = {name: [] for name, _ in targets}
    walls: dict[str, float] = dict.fromkeys(latencies, 0.0)
    for r, count in enumerate(per_round):
        for name, url in targets if r % 2 == 0 else list(reversed(targets)):
            lat, wall = asyncio.run(_run_concurrent(name, url, body, count, concurrency))
            latencies[name].extend(lat)
            walls[name] += wall
    return {name: summarize(latencies[name], walls[name]) for name in latencies}


@dataclass(frozen=True)
class Plan:
    max_requests: int
    min_requests: int
    phase_seconds: float
    warmup: int
    concurrency: int

    def count(self, warm_latency_s: float) -> int:
        """Requests per phase: about ``phase_seconds`` of work, within [min, max] (always bounded)."""
        wanted = int(self.phase_seconds / max(warm_latency_s, 1e-6))
        return max(self.min_requests, min(self.max_requests, wanted))


@dataclass
class ServerResult:
    sequential: Stats
    concurrent: Stats
    warmup_ms: list[float] = field(default_factory=list)
    cpu_ms_per_call: float | None = None
    """Server CPU per call in the interleaved sequential phase (see :func:`cpu_ms_per_call`)."""


@dataclass
class SizeResult:
    size: int
    resources: int
    request_bytes: int
    baseline: ServerResult
    service: ServerResult
    ratio_p50: float
    ratio_goal: float | None
    ratio_cpu: float | None
    """Service CPU per call / baseline CPU per call (the same calls, interleaved)."""
    service_grade: int | None
    service_card_summary: str


def goal_for(size: int) -> float | None:
    """The issue-11 ratio goal for a measured size: the goal whose size is nearest (within 2x)."""
    nearest = min(GOAL_RATIOS, key=lambda goal_size: abs(goal_size - size))
    return GOAL_RATIOS[nearest] if nearest / 2 <= size <= nearest * 2 else None


def warm_up(client: httpx.Client, server: Server, body: bytes, plan: Plan) -> tuple[list[float], dict[str, Any]]:
    """``plan.warmup`` calls (at least one): their latencies and the last card."""
    url = f"{server.url}{SERVICE_PATH}"
    warm: list[float] = []
    card: dict[str, Any] = {}
    for _ in range(plan.warmup):
        latency, card = post_once(client, server.name, url, body)
        warm.append(latency)
    return warm, card


def measure_size(
    size: int, baseline: Server, service: Server, plan: Plan, *, seed: int, progress: Callable[[str], None]
) -> SizeResult:
    """Warm both up and check the service's card (before spending time on it), then the
    interleaved sequential phase and the alternating concurrent phase."""
    resources, body = request_body(size, seed=seed)
    with httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT_S) as client:
        base_warm, _ = warm_up(client, baseline, body, plan)
        service_warm, card = warm_up(client, service, body, plan)
        grade = card_grade(card)
        if grade is None:
            raise BenchError(f"the service did not grade the {resources}-resource patient: {card.get('summary')!r}")
        if grade != EXPECTED_GRADE:
            progress(f"warning: {resources} resources graded {grade}, expected {EXPECTED_GRADE}")
        # Both servers get the same count, set by the slower one, so the rounds pair up.
        n = plan.count(statistics.median(service_warm[1:] or service_warm))
        progress(
            f"  warm: baseline {statistics.median(base_warm) * 1000:.1f} ms, service "
            f"{statistics.median(service_warm) * 1000:.1f} ms; {n} interleaved rounds + {n} concurrent calls each"
        )
        targets = [(baseline.name, f"{baseline.url}{SERVICE_PATH}"), (service.name, f"{service.url}{SERVICE_PATH}")]
        cpu_before = {server.name: server.cpu_seconds() for server in (baseline, service)}
        sequential = run_interleaved(client, targets, body, n)
        cpu = {s.name: cpu_ms_per_call(cpu_before[s.name], s.cpu_seconds(), n) for s in (baseline, service)}
    concurrent = run_concurrent_interleaved(targets, body, n, plan.concurrency)
    base_result = ServerResult(
        sequential[baseline.name][0],
        concurrent[baseline.name],
        [round(w * 1000, 3) for w in base_warm],
        cpu[baseline.name],
    )
    service_result = ServerResult(
        sequential[service.name][0],
        concurrent[service.name],
        [round(w * 1000, 3) for w in service_warm],
        cpu[service.name],
    )
    base_cpu, service_cpu = cpu[baseline.name], cpu[service.name]
    return SizeResult(
        size=size,
        resources=resources,
        request_bytes=len(body),
        baseline=base_result,
        service=service_result,
        ratio_p50=service_result.sequential.p50_ms / base_result.sequential.p50_ms,
        ratio_goal=goal_for(size),
        ratio_cpu=service_cpu / base_cpu if service_cpu is not None and base_cpu else None,
        service_grade=grade,
        service_card_summary=str(card.get("summary")),
    )


# -- the CLI ---------------------------------------------------------------------------------


def time_cli(path: Path, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Wall time and peak RSS of ``crs-cds grade FILE --at ... --json``, which must exit 0 with a grade.

    ``os.wait4`` gives this child's own peak RSS; a timer kills it after ``timeout_s`` so a slow
    build cannot hang the benchmark.
    """
    argv = [sys.executable, "-m", "cds_hooks.cli", "grade", str(path), "--at", AT_ISO, "--json"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if wall >= timeout_s:
        raise BenchError(f"crs-cds grade {path.name} did not finish within {timeout_s:g} s (killed)")
    if proc.returncode != 0:
        raise BenchError(f"crs-cds grade {path.name} exited {proc.returncode}: {stderr[-2000:]!r}")
    grading = orjson.loads(stdout).get("grading") or [{}]
    # ru_maxrss is in KiB on Linux.
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_kib": usage.ru_maxrss,
        "grade": grading[0].get("grade"),
    }


def measure_cli(
    workdir: Path, resources: int, env: dict[str, str], *, seed: int, timeout_s: float, repeats: int
) -> dict[str, Any]:
    """Time the CLI on ``resources`` resources and on the smallest file (its start-up), interleaved.

    Each of ``repeats`` rounds runs the small file, then the big one; the medians are reported,
    and the rate after start-up is resources / (big wall - small wall).
    """
    big, small = workdir / f"patient-{resources}.ndjson", workdir / "patient-small.ndjson"
    count = write_ndjson(big, resources, seed=seed)
    small_count = write_ndjson(small, MIN_RESOURCES, seed=seed)
    startup_runs: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for _ in range(max(1, repeats)):
        startup_runs.append(time_cli(small, env, timeout_s))
        runs.append(time_cli(big, env, timeout_s))
    startups = [r["wall_s"] for r in startup_runs]
    startup_s = statistics.median(startups)
    wall_s = statistics.median(r["wall_s"] for r in runs)
    net = wall_s - startup_s
    startup_cpu_s = statistics.median(r["cpu_s"] for r in startup_runs)
    net_cpu = statistics.median(r["cpu_s"] for r in runs) - startup_cpu_s
    return {
        "resources": count,
        "file_bytes": big.stat().st_size,
        "format": "ndjson",
        "repeats": len(runs),
        "wall_s": wall_s,
        "wall_s_each": [round(r["wall_s"], 3) for r in runs],
        "resources_per_s": count / wall_s,
        "startup_wall_s": startup_s,
        "startup_wall_s_each": [round(t, 3) for t in startups],
        "startup_resources": small_count,
        "resources_per_s_excluding_startup": count / net if net > 0 else None,
        "startup_cpu_s": startup_cpu_s,
        "resources_per_cpu_s_excluding_startup": count / net_cpu if net_cpu > 0 else None,
        "peak_rss_kib": max(r["peak_rss_kib"] for r in runs),
        "grade": runs[-1]["grade"],
    }


# -- report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "httpx", "orjson", "pydantic"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
    }


def git_state() -> dict[str, Any]:
    """The commit measured and whether cds_hooks/ had uncommitted changes (numbers depend on it)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "cds_hooks", "mappings")
    return {"commit": git("rev-parse", "HEAD"), "cds_hooks_dirty": None if dirty is None else bool(dirty)}


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    sizes: list[dict[str, Any]] = results["sizes"]
    header = (
        "| size | resources | request bytes | n (base/svc) | baseline p50 / p95 / p99 ms | "
        "service p50 / p95 / p99 ms | ratio p50 | baseline req/s seq / conc8 | service req/s seq / conc8 |"
    )
    lines = [
        f"## CRS CDS Hooks benchmark ({results['finished_at']}), service and baseline calls interleaved",
        "",
        header,
        "|" + "---|" * 9,
    ]
    for s in sizes:
        b, v = s["baseline"], s["service"]
        bs, bc, vs, vc = b["sequential"], b["concurrent"], v["sequential"], v["concurrent"]
        lines.append(
            f"| ~{s['size']} | {s['resources']} | {s['request_bytes']:,} | {bs['n']}/{vs['n']} | "
            f"{_ms(bs['p50_ms'])} / {_ms(bs['p95_ms'])} / {_ms(bs['p99_ms'])} | "
            f"{_ms(vs['p50_ms'])} / {_ms(vs['p95_ms'])} / {_ms(vs['p99_ms'])} | {s['ratio_p50']:.2f} | "
            f"{bs['req_per_s']:.0f} / {bc['req_per_s']:.0f} | {vs['req_per_s']:.1f} / {vc['req_per_s']:.1f} |"
        )
    lines += [
        "",
        "Server CPU per call in the interleaved phase (ms; robust to other load on the machine):",
        "",
        "| size | baseline | service | ratio CPU |",
        "|---|---|---|---|",
    ]
    for s in sizes:
        base_cpu, service_cpu = s["baseline"].get("cpu_ms_per_call"), s["service"].get("cpu_ms_per_call")
        ratio = s.get("ratio_cpu")
        lines.append(
            f"| ~{s['size']} | {_opt_ms(base_cpu)} | {_opt_ms(service_cpu)} | "
            f"{'n/a' if ratio is None else f'{ratio:.2f}'} |"
        )
    lines += [
        "",
        f"Concurrency {results['settings']['concurrency']}, latency under load (p50 / p99 ms):",
        "",
        "| size | baseline | service |",
        "|---|---|---|",
    ]
    for s in sizes:
        bc, vc = s["baseline"]["concurrent"], s["service"]["concurrent"]
        lines.append(
            f"| ~{s['size']} | {_ms(bc['p50_ms'])} / {_ms(bc['p99_ms'])} | {_ms(vc['p50_ms'])} / {_ms(vc['p99_ms'])} |"
        )
    rss = results["peak_rss_kib"]
    lines += ["", f"Peak RSS (VmHWM): service {_mib(rss['service'])}, baseline {_mib(rss['baseline'])}."]
    lines += ["", *goal_lines(results)]
    cli = results.get("cli")
    if cli is not None:
        excluding = cli["resources_per_s_excluding_startup"]
        lines.append(
            f"CLI `crs-cds grade` on {cli['resources']:,} resources "
            f"({cli['format']}, {cli['file_bytes'] / 1e6:.1f} MB; median of {cli['repeats']}): "
            f"{cli['wall_s']:.2f} s wall, {cli['resources_per_s']:,.0f} resources/s "
            f"({excluding:,.0f}/s without the {cli['startup_wall_s']:.2f} s start-up), "
            f"peak RSS {_mib(cli['peak_rss_kib'])}, grade {cli['grade']}. CPU (user + system, robust to other "
            f"load): start-up {cli['startup_cpu_s']:.2f} s, "
            f"{_rate(cli.get('resources_per_cpu_s_excluding_startup'))} resources per CPU-second after it."
            if excluding is not None
            else f"CLI `crs-cds grade` on {cli['resources']:,} resources: {cli['wall_s']:.2f} s wall."
        )
    m = results["machine"]
    impl = results["servers"]
    lines += [
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), Python {m['python']}; client and servers share the CPUs; "
        f"load average (1 min) {results['load_average_1min']['start']} at the start, "
        f"{results['load_average_1min']['end']} at the end. "
        f"uvicorn {m['packages'].get('uvicorn')}, single worker; loaded: service {impl['service']}, "
        f"baseline {impl['baseline']}.",
        f"Commit {results['git']['commit']}"
        + (" (cds_hooks/ modified)" if results["git"]["cds_hooks_dirty"] else "")
        + (" (the tree changed during the run)" if results["git"]["changed_during_run"] else ""),
    ]
    return "\n".join(lines)


def goal_lines(results: dict[str, Any]) -> list[str]:
    """One table row per issue-11 goal: the goal, what this run measured, met or not."""
    rows = ["| goal | limit | measured | |", "|---|---|---|---|"]
    for s in results["sizes"]:
        if s.get("ratio_goal") is not None:
            met = s["ratio_p50"] <= s["ratio_goal"]
            rows.append(
                f"| service p50 / baseline p50 at ~{s['size']} | <= {s['ratio_goal']:g} | "
                f"{s['ratio_p50']:.2f} | {'met' if met else 'NOT met'} |"
            )
    cli = results.get("cli")
    if cli is not None:
        rate = cli["resources_per_s_excluding_startup"]
        if rate is not None:
            met = rate >= GOAL_CLI_RESOURCES_PER_S
            rows.append(
                f"| `crs-cds grade` resources/s after start-up | >= {GOAL_CLI_RESOURCES_PER_S:,.0f} | "
                f"{rate:,.0f} | {'met' if met else 'NOT met'} |"
            )
        met = cli["startup_wall_s"] <= GOAL_CLI_STARTUP_S
        rows.append(
            f"| `crs-cds grade` start-up (a {cli['startup_resources']}-resource file) | <= {GOAL_CLI_STARTUP_S:g} s | "
            f"{cli['startup_wall_s']:.2f} s | {'met' if met else 'NOT met'} |"
        )
    return rows if len(rows) > 2 else []


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _opt_ms(value: float | None) -> str:
    return "n/a" if value is None else _ms(value)


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.0f} MiB"


# -- main ------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[None]:
    """Start every server; stop all of them whatever happens."""
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few requests (a test, not a measurement)")
    parser.add_argument("--sizes", help="comma-separated resource counts (default 100,550,5000)")
    parser.add_argument("--requests", type=int, help="most requests per phase (default 300)")
    parser.add_argument("--min-requests", type=int, help="fewest requests per phase (default 30)")
    parser.add_argument(
        "--phase-seconds", type=float, help="aim for about this much work per phase, within the bounds (default 12)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cli-resources", type=int, help="resources in the file graded by the CLI (default 50000)")
    parser.add_argument("--no-cli", action="store_true", help="skip timing crs-cds grade")
    parser.add_argument("--cli-timeout", type=float, default=600.0, help="seconds before the CLI run is killed")
    parser.add_argument("--cli-repeats", type=int, help="CLI rounds (start-up + big file); medians (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/latest.json; smoke: smoke.json)")
    args = parser.parse_args(argv)
    smoke = bool(args.smoke)
    defaults: dict[str, Any] = {
        "sizes": "20,60" if smoke else "100,550,5000",
        "requests": 5 if smoke else 300,
        "min_requests": 3 if smoke else 30,
        "phase_seconds": 0.5 if smoke else 12.0,
        "cli_resources": 400 if smoke else 50_000,
        "cli_repeats": 1 if smoke else 3,
        "out": ROOT / "bench" / "results" / ("smoke.json" if smoke else "latest.json"),
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.size_list = list(iter_sizes(args.sizes))
    if not args.size_list or min(args.size_list) < MIN_RESOURCES:
        parser.error(f"--sizes: each size must be at least {MIN_RESOURCES}")
    if args.requests < 1 or args.min_requests < 1 or args.min_requests > args.requests or args.concurrency < 1:
        parser.error("--requests and --min-requests must be >= 1, min <= max, and --concurrency >= 1")
    return args


def run(args: argparse.Namespace, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    plan = Plan(
        max_requests=args.requests,
        min_requests=args.min_requests,
        phase_seconds=args.phase_seconds,
        warmup=2 if args.smoke else 5,  # at least 1: the card checked comes from the warm-up
        concurrency=args.concurrency,
    )
    git_at_start = git_state()  # what the servers load; the tree may change while the run goes on
    load_at_start = _load_average()
    env = server_env(workdir)
    py = sys.executable
    service = Server("service", [py, "-m", "cds_hooks.cli", "serve", "--host", LOOPBACK, "--port"], env, workdir)
    baseline = Server("baseline", [py, "-m", "bench.baseline_app", "--host", LOOPBACK, "--port"], env, workdir)
    sizes: list[SizeResult] = []
    with running([baseline, service]):
        progress(f"servers up: service {service.url}, baseline {baseline.url}")
        for size in args.size_list:
            progress(f"size ~{size}: measuring (interleaved) ...")
            result = measure_size(size, baseline, service, plan, seed=args.seed, progress=progress)
            progress(
                f"size ~{size}: service p50 {result.service.sequential.p50_ms:.2f} ms, "
                f"baseline p50 {result.baseline.sequential.p50_ms:.2f} ms, ratio {result.ratio_p50:.2f}"
            )
            sizes.append(result)
        rss = {"service": service.proc_status("VmHWM"), "baseline": baseline.proc_status("VmHWM")}
        modules = ("uvloop", "httptools")
        servers = {"service": service.loaded_modules(modules), "baseline": baseline.loaded_modules(modules)}
    cli = None
    if not args.no_cli:
        progress(f"timing crs-cds grade on {args.cli_resources:,} resources ...")
        cli = measure_cli(
            workdir, args.cli_resources, env, seed=args.seed, timeout_s=args.cli_timeout, repeats=args.cli_repeats
        )
    return {
        "finished_at": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "smoke": args.smoke,
        "machine": machine(),
        "git": git_at_start | {"changed_during_run": git_state() != git_at_start},
        "load_average_1min": {"start": load_at_start, "end": _load_average()},
        "settings": {
            "concurrency": plan.concurrency,
            "max_requests": plan.max_requests,
            "min_requests": plan.min_requests,
            "phase_seconds": plan.phase_seconds,
            "warmup": plan.warmup,
            "interleaved": "sequential: A B / B A per round; concurrent: alternating rounds",
            "concurrent_rounds": CONCURRENT_ROUNDS,
            "seed": args.seed,
            "evaluation_time": AT_ISO,
            "uvicorn": "uvicorn.run(app, host, port, log_config=None, access_log=False) for both servers",
        },
        "servers": servers,
        "sizes": [asdict(s) for s in sizes],
        "peak_rss_kib": rss,
        "goals": {
            "ratio_p50": {str(size): limit for size, limit in GOAL_RATIOS.items()},
            "cli_resources_per_s": GOAL_CLI_RESOURCES_PER_S,
            "cli_startup_s": GOAL_CLI_STARTUP_S,
        },
        "cli": cli,
    }


def _load_average() -> float | None:
    """The 1-minute load average: other work on a shared machine, recorded beside the numbers."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `running`, which stops the servers


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="crs-bench-") as tmp:
        try:
            results = run(args, Path(tmp), progress)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print(markdown(results))
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
