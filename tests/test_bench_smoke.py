"""The benchmark still runs end to end (issue 5): both servers start, answer and are compared.

Why a smoke run and not a timing test: shared CI machines make timings noise, so this only checks
that ``bench/run_bench.py --smoke`` exits 0 and reports the service and the baseline. It asserts
no latency, throughput or ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_smoke_runs_and_reports_service_and_baseline(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_bench.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    table = done.stdout.lower()
    assert "| size |" in table
    assert "service" in table
    assert "baseline" in table
    results = json.loads(out.read_text())
    assert results["smoke"] is True
    assert results["sizes"], "no size was measured"
    for size in results["sizes"]:
        assert size["service"]["sequential"]["n"] >= 1
        assert size["baseline"]["sequential"]["n"] >= 1
