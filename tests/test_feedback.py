"""Feedback loses nothing: stored in a real SQLite file, once per item however often it is sent,
joined to the card that was shown, and still there after the process is killed right after 200."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cds_hooks.cli import main
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from hook_requests import patient_view, prefetch_from_bundle
from service_process import RunningService
from vignette_data import vignette_bundle

SERVICE = "/cds-services/crs-grade"


def _rows(database: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY rowid")]


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "feedback.sqlite3"


@pytest.fixture
def client(database: Path) -> Iterator[TestClient]:
    settings = Settings(allow_unauthenticated=True, database_url=f"sqlite:///{database}")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _card(client: TestClient, vignette_id: str = "V01") -> dict[str, Any]:
    bundle = vignette_bundle(vignette_id)
    request = patient_view(vignette_id.lower(), prefetch=prefetch_from_bundle(bundle), at="2025-03-04T08:00:00Z")
    card: dict[str, Any] = client.post(SERVICE, json=request).json()["cards"][0]
    return card


def _accepted(card: dict[str, Any], *suggestion_labels: str) -> dict[str, Any]:
    ids = [s["uuid"] for s in card["suggestions"] if s["label"].startswith(suggestion_labels)]
    return {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": i} for i in ids],
        "outcomeTimestamp": "2025-03-04T08:05:00Z",
    }


def _overridden(card_uuid: str) -> dict[str, Any]:
    return {
        "card": card_uuid,
        "outcome": "overridden",
        "outcomeTimestamp": "2025-03-04T08:06:00Z",
        "overrideReason": {
            "reason": {
                "system": "https://crs-cds-hooks.example.org/CodeSystem/override-reason",
                "code": "fever-other-cause",
                "display": "Fever attributed to another cause",
            },
            "userComment": "line infection",
        },
    }


def test_issued_card_is_recorded_with_grade_and_evidence(client: TestClient, database: Path) -> None:
    card = _card(client)
    (row,) = _rows(database, "issued_card")
    assert row["card_uuid"] == card["uuid"]
    assert row["grade"] == 3
    assert "MedicationAdministration/v01-med-1" in json.loads(row["evidence_references"])
    assert "v01" not in row["patient_hash"]
    assert "access_token" not in json.dumps(row)


def test_feedback_round_trip_through_sqlite(client: TestClient, database: Path) -> None:
    card = _card(client)
    response = client.post(f"{SERVICE}/feedback", json={"feedback": [_accepted(card, "Tocilizumab")]})
    assert response.status_code == 200
    assert response.json() == {}
    (row,) = _rows(database, "feedback")
    assert row["card_uuid"] == card["uuid"] and row["outcome"] == "accepted" and row["matched"] == 1
    assert len(json.loads(row["accepted_suggestions"])) == 1


def test_same_feedback_twice_is_stored_once(client: TestClient, database: Path) -> None:
    card = _card(client)
    body = {"feedback": [_accepted(card, "Tocilizumab"), _overridden(card["uuid"])]}
    assert client.post(f"{SERVICE}/feedback", json=body).status_code == 200
    assert client.post(f"{SERVICE}/feedback", json=body).status_code == 200
    assert [r["outcome"] for r in _rows(database, "feedback")] == ["accepted", "overridden"]


def test_feedback_for_an_unknown_card_is_kept_and_marked_unmatched(client: TestClient, database: Path) -> None:
    assert (
        client.post(f"{SERVICE}/feedback", json={"feedback": [_overridden("card-from-another-replica")]}).status_code
        == 200
    )
    (row,) = _rows(database, "feedback")
    assert row["matched"] == 0 and row["override_code"] == "fever-other-cause"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{nope", id="not-json"),
        pytest.param(b"{}", id="no-feedback-list"),
        pytest.param(b'{"feedback": []}', id="empty-feedback-list"),
        pytest.param(
            b'{"feedback": [{"card": "c", "outcome": "maybe", "outcomeTimestamp": "2025-03-04T08:00:00Z"}]}',
            id="unknown-outcome",
        ),
        pytest.param(b'{"feedback": [{"card": "c", "outcome": "accepted"}]}', id="no-timestamp"),
        pytest.param(
            b'{"feedback": [{"outcome": "accepted", "outcomeTimestamp": "2025-03-04T08:00:00Z"}]}', id="no-card"
        ),
    ],
)
def test_malformed_feedback_is_400_and_stores_nothing(client: TestClient, database: Path, body: bytes) -> None:
    response = client.post(f"{SERVICE}/feedback", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert _rows(database, "feedback") == []


def test_feedback_for_an_unknown_service_is_404(client: TestClient) -> None:
    assert client.post("/cds-services/nope/feedback", json={"feedback": [_overridden("x")]}).status_code == 404


def test_feedback_report_rates_by_grade_and_suggestion(
    client: TestClient, database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = _card(client)
    other = _card(client, "V34")
    client.post(f"{SERVICE}/feedback", json={"feedback": [_accepted(card, "Tocilizumab"), _overridden(other["uuid"])]})
    assert main(["feedback-report", "--database", f"sqlite:///{database}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 2
    assert report["byGrade"] == {"3": {"accepted": 1, "overridden": 0}, "2": {"accepted": 0, "overridden": 1}}
    assert report["bySuggestion"]["Tocilizumab 600 mg IV over 1 h"] == {"offered": 1, "accepted": 1}
    assert report["bySuggestion"]["Tocilizumab 800 mg IV over 1 h"] == {"offered": 1, "accepted": 0}


def test_a_process_killed_right_after_the_200_keeps_the_row(tmp_path: Path) -> None:
    """The write is committed before the response: SIGKILL straight after 200 loses nothing."""
    database = tmp_path / "durable.sqlite3"
    env = {"CRS_CDS_ALLOW_UNAUTHENTICATED": "true", "CRS_CDS_DATABASE_URL": f"sqlite:///{database}"}
    items = [_overridden(f"card-{n}") for n in range(5)]
    with RunningService(env) as service:
        for item in items:
            response = httpx.post(f"{service.base_url}{SERVICE}/feedback", json={"feedback": [item]}, timeout=10)
            assert response.status_code == 200
        service.kill()
    assert [r["card_uuid"] for r in _rows(database, "feedback")] == [f"card-{n}" for n in range(5)]
