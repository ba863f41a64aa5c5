"""The repository as a newcomer meets it: it stands alone, its README examples run as written, and
running the tests or the service leaves no untracked or rewritten files behind.

Why these checks: a clone is all a newcomer (or a new CI machine) has. Each case below was a real
stumble (issue 13): tests reading the team's shared folder beside the clone, a README example posting a file nobody has, a
RESULT shown as an object where every output gives a list, SQLite's WAL files showing as untracked,
a test rewriting a tracked image.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cds_hooks.cli import main
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
_TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ""}


def _code_and_scripts() -> list[Path]:
    """What runs or is read at run time: the package, tests, mappings, scripts and build files.

    Prose (README, docs/) may tell the history of the shared folder; it reads nothing.
    """
    skip = {"__pycache__", "golden", "vignettes"}
    files = [ROOT / name for name in ("Makefile", "Dockerfile", "pyproject.toml") if (ROOT / name).is_file()]
    files.extend(p for p in (ROOT / ".ci").iterdir() if p.is_file())
    for folder in ("cds_hooks", "tests", "mappings", "bench"):
        files.extend(
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in _TEXT_SUFFIXES and not skip & set(p.relative_to(ROOT).parts)
        )
    return files


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(r"\.\./shared", id="relative-path-to-shared"),
        pytest.param(r"parents\[2\]\s*/\s*\"shared\"", id="path-computed-above-the-repository"),
        pytest.param(r"CRS_CDS_" + "SHARED" + "_DIR", id="environment-pointer-to-shared"),
    ],
)
def test_nothing_reads_outside_the_repository(pattern: str) -> None:
    """Code, tests, mappings and scripts read and cite the repository's own copies (docs/reference/...)."""
    this_file = Path(__file__).resolve()
    offenders = [
        str(path.relative_to(ROOT))
        for path in _code_and_scripts()
        if path.resolve() != this_file and re.search(pattern, path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("relative", "provenance"),
    [
        pytest.param("docs/reference/codes.csv", "docs/reference/README.md", id="codes"),
        pytest.param("docs/reference/ctcae.md", "docs/reference/README.md", id="ctcae-rows"),
        pytest.param("docs/clinical-reference.md", "docs/clinical-reference.md", id="clinical-reference"),
        pytest.param(
            "tests/fixtures/clinical/vignettes-public.json", "tests/fixtures/clinical/README.md", id="vignettes"
        ),
    ],
)
def test_reference_copies_are_here_with_their_provenance(relative: str, provenance: str) -> None:
    """Each copied file is in the repository, and a README (or its own header) says where and when it came from."""
    assert (ROOT / relative).is_file()
    text = (ROOT / provenance).read_text(encoding="utf-8")
    head = text if provenance != relative else text[:600]
    assert Path(relative).name in head or "Copied from the team's clinical reference" in head
    assert "2026-11-30" in head


def test_readme_result_is_a_list_like_the_cli() -> None:
    """The README's RESULT example has the shape the CLI prints under ``grading``: a list of results."""
    block = re.search(r"```json\n(\[.*?\])\n```", README, re.DOTALL)
    assert block is not None, "README shows no RESULT list"
    example = json.loads(block.group(1))
    assert isinstance(example, list)
    assert example[0]["system"] == "ASTCT-2019"


def test_readme_result_keys_are_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every key the README shows is one the service really writes: V01 as charted, and V01 with its
    temperature entered in error (so ``missing`` and ``notEvidence`` appear)."""
    block = re.search(r"```json\n(\[.*?\])\n```", README, re.DOTALL)
    assert block is not None
    (example,) = json.loads(block.group(1))
    v01 = ROOT / "tests" / "fixtures" / "vignettes" / "V01.bundle.json"
    bundle = json.loads(v01.read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        if entry["resource"].get("code", {}).get("coding", [{}])[0].get("code") == "8310-5":
            entry["resource"]["status"] = "entered-in-error"
    erroneous = tmp_path / "v01-temperature-in-error.json"
    erroneous.write_text(json.dumps(bundle), encoding="utf-8")
    keys: set[str] = set()
    for path in (v01, erroneous):
        assert main(["grade", str(path), "--at", "2025-03-04T08:00:00Z", "--json"]) == 0
        output = json.loads(capsys.readouterr().out)
        assert isinstance(output["grading"], list)
        for result in output["grading"]:
            keys.update(result)
    assert set(example) - keys == set()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


POSTS_OF_A_FILE = [
    command
    for command in re.findall(r"curl [^\n]*-X POST[^\n]*", README.replace("\\\n", " "))
    if re.search(r"-d @\S+", command)
]
"""README curl commands that post a file (``\\`` continuation lines joined)."""


def test_readme_has_a_post_of_a_file() -> None:
    assert POSTS_OF_A_FILE, "the README's course example should post a request file"


@pytest.mark.parametrize(
    "command", [pytest.param(c, id=c.split("/cds-services/")[1].split()[0]) for c in POSTS_OF_A_FILE]
)
def test_readme_post_examples_name_a_file_that_exists_and_works(client: TestClient, command: str) -> None:
    """``-d @file`` in the README names a request in the repository, and the service answers it with 200."""
    body = re.search(r"-d @(\S+)", command)
    assert body is not None, command
    path = ROOT / body.group(1)
    assert path.is_file(), f"README posts {body.group(1)}, which is not in the repository"
    url = re.search(r"localhost:8080(/\S+)", command)
    assert url is not None
    response = client.post(url.group(1), json=json.loads(path.read_text(encoding="utf-8")))
    assert response.status_code == 200, response.text


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("crs-cds.sqlite3", id="sqlite-store"),
        pytest.param("crs-cds.sqlite3-wal", id="sqlite-wal"),
        pytest.param("crs-cds.sqlite3-shm", id="sqlite-shm"),
        pytest.param("feedback.db-wal", id="db-wal"),
        pytest.param("test-artifacts/smart-app.png", id="e2e-screenshot"),
    ],
)
def test_run_files_are_ignored_by_git(name: str) -> None:
    """What ``make run`` and ``make test`` write never shows as untracked."""
    done = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, check=False)
    assert done.returncode == 0, f"{name} is not git-ignored"


def test_no_test_writes_into_tracked_docs() -> None:
    """Tests write their artifacts to test-artifacts/ only: a test run never rewrites a tracked file."""
    writes = re.compile(r"\"docs\"[^\n]*\.write_(bytes|text)|docs/[^\n\"]*\"\)?\.write_(bytes|text)")
    this_file = Path(__file__).resolve()
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if path.resolve() != this_file and writes.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def _recipe(target: str) -> str:
    """The target's line and recipe lines, with the comment block just above it."""
    match = re.search(rf"((?:^#[^\n]*\n)*)^{target}:[^\n]*\n((?:\t[^\n]*\n)*)", MAKEFILE, re.MULTILINE)
    assert match is not None, f"no {target} target"
    return match.group(0)


def test_make_test_and_ci_share_one_machine_set_up() -> None:
    """`make test` runs .ci/setup; .ci/run goes through `make test` and installs nothing itself."""
    assert re.search(r"^test:.*\bsetup\b", MAKEFILE, re.MULTILINE)
    assert ".ci/setup" in _recipe("setup")
    ci_run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci_run
    assert "apt-get" not in ci_run
    setup = (ROOT / ".ci" / "setup").read_text(encoding="utf-8")
    for package in (
        "postgresql",
        "chromium",
        "chromium-driver",
        "haproxy",
        "default-jre-headless",
        "kubernetes-client",
    ):
        assert package in setup


def test_make_run_comment_says_what_it_sets() -> None:
    """The `make run` comment and its environment agree: no client auth, FHIR call-backs still https."""
    run = _recipe("run")
    assert "CRS_CDS_ALLOW_UNAUTHENTICATED=true" in run
    assert "ALLOW_INSECURE_FHIR_SERVER=true" not in run.split("\n\t", 1)[1]
    assert "http FHIR servers allowed" not in run
    assert "https" in run
