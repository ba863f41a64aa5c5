"""``crs-cds grade``: the public vignettes in every FHIR shape grade as expected, through the real
console script for the plain shape and in-process for the variants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cds_hooks.cli import main

from vignette_data import FIXTURES, vignette_expected, vignette_ids
from vignette_fhir import VARIANTS, load_public_vignettes, vignette_to_bundle

EXPECTED = vignette_expected()
CRS_CDS = [sys.executable, "-m", "cds_hooks.cli"]


def _check(output: dict[str, Any], vignette_id: str) -> None:
    expected = EXPECTED[vignette_id]
    (result,) = output["grading"]
    assert output["patient"] == f"Patient/{vignette_id.lower()}"
    assert result["system"] == "ASTCT-2019"
    assert result["grade"] == expected["astct_crs_grade"]
    assert result["worstGrade"] == expected.get("astct_crs_max_grade_episode", expected["astct_crs_grade"])
    assert result["at"] == expected["evaluation_time"]


@pytest.mark.parametrize("vignette_id", vignette_ids())
def test_console_script_grades_vignette(vignette_id: str) -> None:
    bundle = FIXTURES / "vignettes" / f"{vignette_id}.bundle.json"
    at = EXPECTED[vignette_id]["evaluation_time"]
    done = subprocess.run(
        [*CRS_CDS, "grade", str(bundle), "--at", at, "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    _check(json.loads(done.stdout), vignette_id)


VARIANT_CASES = [
    pytest.param(v, variant, id=f"{v['id']}-{variant}") for v in load_public_vignettes() for variant in VARIANTS
]


@pytest.mark.parametrize(("vignette", "variant"), VARIANT_CASES)
def test_every_fhir_shape_grades_the_same(
    vignette: dict[str, Any], variant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(vignette_to_bundle(vignette, variant=variant)))
    assert main(["grade", str(path), "--at", vignette["evaluation_time"], "--json"]) == 0
    _check(json.loads(capsys.readouterr().out), vignette["id"])


def test_indeterminate_grade_is_null_in_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = json.loads((FIXTURES / "vignettes" / "V02.bundle.json").read_text())
    bundle["entry"] = [
        e for e in bundle["entry"] if e["resource"].get("code", {}).get("coding", [{}])[0].get("code") != "8310-5"
    ]
    path = tmp_path / "no-temperature.json"
    path.write_text(json.dumps(bundle))
    assert main(["grade", str(path), "--at", "2025-03-04T08:00:00Z", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["grading"]
    assert result["grade"] is None
    assert result["status"] == "indeterminate"
    assert any("body temperature" in m for m in result["missing"])


def test_human_summary_names_grade_and_evidence(capsys: pytest.CaptureFixture[str]) -> None:
    bundle = FIXTURES / "vignettes" / "V01.bundle.json"
    assert main(["grade", str(bundle), "--at", "2025-03-04T08:00:00Z"]) == 0
    text = capsys.readouterr().out
    assert "ASTCT-2019: grade 3" in text
    assert "vasopressor: met norepinephrine (MedicationAdministration/v01-med-1)" in text
    assert "tocilizumab dose if indicated: 600 mg" in text


def test_ndjson_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = json.loads((FIXTURES / "vignettes" / "V11.bundle.json").read_text())
    path = tmp_path / "v11.ndjson"
    path.write_text("\n".join(json.dumps(e["resource"]) for e in bundle["entry"]) + "\n")
    assert main(["grade", str(path), "--at", "2025-03-04T08:00:00Z", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["grading"][0]["grade"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["grade", "/nonexistent.json"], "cannot read", id="missing-file"),
        pytest.param(["grade", "{bundle}", "--at", "yesterday"], "--at", id="bad-time"),
        pytest.param(["grade", "{bundle}", "--systems", "NOPE"], "unknown grading systems", id="unknown-system"),
    ],
)
def test_cli_errors_exit_2_with_a_reason(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = str(FIXTURES / "vignettes" / "V01.bundle.json")
    assert main([a.replace("{bundle}", bundle) for a in args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env_url"),
    [
        pytest.param(["serve"], "postgresql://crs@db.example.org/crs", id="serve-postgresql-url-from-settings"),
        pytest.param(["serve"], "postgres://crs@db.example.org/crs", id="serve-postgres-scheme"),
        pytest.param(
            ["feedback-report", "--database", "postgresql://crs@db.example.org/crs"], None, id="report-database-option"
        ),
    ],
)
def test_postgresql_url_without_psycopg_is_one_line_and_exit_2(
    args: list[str], env_url: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A newcomer's PostgreSQL URL without the optional driver: one line naming the fix, like any bad setting."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed: find_spec answers None
    monkeypatch.setenv("CRS_CDS_ALLOW_UNAUTHENTICATED", "true")
    if env_url is not None:
        monkeypatch.setenv("CRS_CDS_DATABASE_URL", env_url)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs psycopg" in err
    assert "crs-cds-hooks[postgres]" in err
