"""The episodes benchmark still runs end to end (issue 14): a tiny export, once.

No timing is asserted (a shared machine makes timings noise): only that ``bench/bench_episodes.py
--smoke`` exits 0 and reports the floor, the episodes run and their ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_episodes_bench_smoke_reports_floor_episodes_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_episodes.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "floor/episodes" in done.stdout
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    assert result["patients"] == 12
    assert result["rows"] == 26  # two patients per known course: 13 rows per six patients
    assert result["floorSeconds"] > 0 and result["episodesSeconds"] > 0 and result["ratio"] > 0
    assert result["gradingCpuSecondsOneProcess"] > 0 and "grading alone, one process" in done.stdout
