"""``crs-cds grade`` as a batch tool (issue 11): every file layout reads the same, a bulk NDJSON
export goes straight to line-by-line parsing, and grading a file loads no web stack.

Why these and not timings: start-up and throughput are measured by ``bench/run_bench.py``; what a
test can pin down is the design that makes them fast (what is imported, how a file is split)
without changing what a clinician sees.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.cli import main
from cds_hooks.reading.bundles import resources_of

from vignette_data import FIXTURES

AT = "2025-03-04T08:00:00Z"
V11 = FIXTURES / "vignettes" / "V11.bundle.json"
"""Grade 4 at AT (clinical course in the public vignettes)."""


def _resources() -> list[dict[str, Any]]:
    return [entry["resource"] for entry in json.loads(V11.read_text())["entry"]]


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


LAYOUTS: list[Any] = [
    pytest.param(lambda rs: json.dumps(_bundle(rs), indent=2), id="pretty-bundle"),
    pytest.param(lambda rs: json.dumps(_bundle(rs)), id="one-line-bundle"),
    pytest.param(lambda rs: json.dumps(_bundle(rs)) + "\n\n", id="one-line-bundle+blank-lines"),
    pytest.param(lambda rs: "\n".join(json.dumps(r) for r in rs) + "\n", id="ndjson"),
    pytest.param(lambda rs: "\r\n".join(json.dumps(r) for r in rs), id="ndjson-crlf"),
    pytest.param(lambda rs: "\n\n" + "\n\n".join(json.dumps(r) for r in rs) + "\n", id="ndjson-blank-lines"),
    pytest.param(lambda rs: json.dumps(_bundle(rs[:1])) + "\n" + json.dumps(_bundle(rs[1:])), id="ndjson-of-bundles"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_file_layout_grades_the_same(
    layout: Callable[[list[dict[str, Any]]], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "patient.json"
    path.write_text(layout(_resources()))
    assert main(["grade", str(path), "--at", AT, "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["grading"]
    assert result["grade"] == 4
    assert gc.isenabled(), "the collector is switched back on after a file is graded"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"resourceType": "Patient", "id": "p1"}\n{"resourceType": ', id="ndjson-truncated-last-line"),
        pytest.param('{"resourceType": "Bundle",\n "entry": [', id="json-truncated"),
        pytest.param("not json\n{}\n", id="text"),
    ],
)
def test_unreadable_file_exits_2_with_a_reason(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text)
    assert main(["grade", str(path), "--at", AT]) == 2
    assert "is neither JSON nor NDJSON" in capsys.readouterr().err


WEB_STACK = ("fastapi", "starlette", "uvicorn", "httpx")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["grade", str(V11), "--at", AT, "--json"], '"grade": 4', id="grade-file-json"),
        pytest.param(["grade", str(V11), "--at", AT, "--timeline"], '"course"', id="grade-file-timeline"),
    ],
)
def test_grading_a_file_loads_no_web_stack(args: list[str], expected: str) -> None:
    """Start-up is most of a one-file run: FastAPI, uvicorn and httpx are for ``serve`` and
    ``--fhir-server`` only."""
    script = (
        "import sys\n"
        "from cds_hooks.cli import main\n"
        f"code = main({args!r})\n"
        f"loaded = [m for m in {WEB_STACK!r} if m in sys.modules]\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
        "raise SystemExit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
    assert "LOADED []" in done.stderr


P1 = {"resourceType": "Patient", "id": "p1"}
T1 = {"resourceType": "Observation", "id": "t1", "status": "final"}
T1_LATER = {"resourceType": "Observation", "id": "t1", "status": "amended"}


@pytest.mark.parametrize(
    ("payloads", "references"),
    [
        pytest.param([P1, T1], ["Patient/p1", "Observation/t1"], id="plain-lines"),
        pytest.param([T1, T1_LATER], ["Observation/t1"], id="same-resource-twice->first-kept"),
        pytest.param(
            [T1, {"resourceType": "Bundle", "entry": [{"resource": T1_LATER}, {"resource": P1}]}],
            ["Observation/t1", "Patient/p1"],
            id="line-then-bundle-copy->first-kept",
        ),
        pytest.param(
            [{"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "x"}]}, P1],
            ["Patient/p1"],
            id="operation-outcome-line-skipped",
        ),
        pytest.param([[P1], "text", 3, P1], ["Patient/p1"], id="non-objects-skipped"),
        pytest.param([{"resourceType": "Observation"}, {"id": "x"}, {"resourceType": 7, "id": "y"}], [], id="no-ref"),
    ],
)
def test_bulk_lines_give_each_resource_once(payloads: list[object], references: list[str]) -> None:
    taken = resources_of(payloads)
    assert [r.reference for r in taken] == references
    if references and references[0] == "Observation/t1":
        assert taken[0].resource["status"] == "final", "the first copy wins"
