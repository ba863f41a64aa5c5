"""``crs-cds watch`` against a real FHIR server process and a local webhook receiver (issue 15).

The "Done when" list, each a test: data appear that raise a patient's grade -> exactly one signed
alert with the grade and its references; no new data -> nothing repeated; a restart of the
watcher -> nothing repeated; stale data -> one stale-data alert; two watchers -> one works. The
watcher runs as deployed (its own process, settings from the environment, JSON logs); data times
are relative to now, since the watcher grades at the moment it runs.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fhir.resources.R4B.communication import Communication

from fhir_builders import LOINC, concept, observation, patient, temperature, when
from fhir_server import RunningFhirServer
from service_process import PROJECT_ROOT
from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "watch-secret-5b7e1f0c-test"
TOKEN = "watch-tok-91d3-do-not-log"
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Run:
    reports: list[dict[str, Any]]
    stderr: str


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def watch_env(
    fhir_server: RunningFhirServer, receiver: WebhookReceiver, database: Path, patients: list[str], **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRS_CDS_")}
    env.update(
        {
            "CRS_CDS_FHIR_SERVER_ALLOWLIST": fhir_server.base_url,
            "CRS_CDS_ALLOW_INSECURE_FHIR_SERVER": "true",
            "CRS_CDS_WATCH_FHIR_SERVER": fhir_server.base_url,
            "CRS_CDS_WATCH_PATIENTS": ",".join(patients),
            "CRS_CDS_WATCH_TOKEN": TOKEN,
            "CRS_CDS_WATCH_WEBHOOK_URL": receiver.url,
            "CRS_CDS_WATCH_WEBHOOK_SECRET": SECRET,
            "CRS_CDS_WATCH_WEBHOOK_BACKOFF_S": "0.05",
            "CRS_CDS_DATABASE_URL": f"sqlite:///{database}",
            "CRS_CDS_LOG_LEVEL": "debug",  # the most a log could say: still no patient id, no token
            "CRS_CDS_FHIR_REQUEST_TIMEOUT_SECONDS": "20",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def watch_once(env: Mapping[str, str], *, exit_code: int = 0) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "cds_hooks.cli", "watch", "--once"],
        env=dict(env),
        cwd=PROJECT_ROOT,
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == exit_code, stderr
    reports = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    return Run(reports, stderr)


def assert_no_secrets(text: str, *patient_ids: str) -> None:
    for secret in (TOKEN, SECRET, *patient_ids):
        assert secret not in text


def now() -> datetime:
    return datetime.now(UTC)


def oxygen_flow(rid: str, flow_l_min: float, *, minutes_before: float, patient_id: str) -> dict[str, Any]:
    out = observation(
        rid,
        concept(LOINC, "3151-8", "Inhaled oxygen flow rate"),
        effective=when(minutes_before=minutes_before, at=now()),
        patient_id=patient_id,
    )
    out["valueQuantity"] = {
        "value": flow_l_min,
        "unit": "L/min",
        "system": "http://unitsofmeasure.org",
        "code": "L/min",
    }
    return out


def temp(rid: str, celsius: float, *, hours_before: float, patient_id: str) -> dict[str, Any]:
    return temperature(rid, celsius, effective=when(hours_before, at=now()), patient_id=patient_id)


def test_grade_rise_alerts_once_signed_and_not_after_restart(
    fhir_server: RunningFhirServer, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    pid = "watch-rise-7f3a"
    fhir_server.load([patient(50, patient_id=pid, at=now()), temp(f"{pid}-t0", 37.0, hours_before=2, patient_id=pid)])
    env = watch_env(fhir_server, receiver, tmp_path / "watch.sqlite3", [pid])

    quiet = watch_once(env)
    assert quiet.reports == [quiet.reports[0]] and quiet.reports[0]["graded"] == 1
    assert receiver.delivered_for(f"Patient/{pid}") == []

    fhir_server.load([temp(f"{pid}-fever", 39.2, hours_before=0.2, patient_id=pid)])
    first = watch_once(env)
    alerts = receiver.delivered_for(f"Patient/{pid}")
    assert [(a["kind"], a["system"], a["grade"], a["previousGrade"]) for a in alerts] == [
        ("grade-rise", "ASTCT-2019", 1, None)
    ]
    assert f"Observation/{pid}-fever" in alerts[0]["references"]
    assert set(alerts[0]) >= {
        "id",
        "kind",
        "patient",
        "system",
        "grade",
        "previousGrade",
        "at",
        "references",
        "summary",
    }
    assert all(r.signed_with(SECRET) for r in receiver.received())

    again = watch_once(env)  # no new data, and a new process: a restart
    assert len(receiver.delivered_for(f"Patient/{pid}")) == 1
    assert again.reports[0]["alerts"] == 0

    fhir_server.load([oxygen_flow(f"{pid}-o2", 2.0, minutes_before=5, patient_id=pid)])
    watch_once(env)
    alerts = receiver.delivered_for(f"Patient/{pid}")
    assert [(a["grade"], a["previousGrade"]) for a in alerts] == [(1, None), (2, 1)]
    assert f"Observation/{pid}-o2" in alerts[1]["references"]
    for run in (quiet, first, again):
        assert_no_secrets(run.stderr, pid)


def test_group_members_watched_and_failed_delivery_retried_with_the_same_id(
    fhir_server: RunningFhirServer, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    pid = "watch-retry-2c9d"
    ward = {
        "resourceType": "Group",
        "id": "watch-ward-4b",
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": f"Patient/{pid}"}},
            {"entity": {"reference": "Patient/watch-discharged-0a1"}, "inactive": True},
        ],
    }
    fhir_server.load(
        [patient(40, patient_id=pid, at=now()), temp(f"{pid}-fever", 38.6, hours_before=0.5, patient_id=pid), ward]
    )
    env = watch_env(fhir_server, receiver, tmp_path / "watch.sqlite3", [], CRS_CDS_WATCH_WEBHOOK_ATTEMPTS="2")
    del env["CRS_CDS_WATCH_PATIENTS"]
    env["CRS_CDS_WATCH_GROUP"] = "watch-ward-4b"
    receiver.fail_next(503, 503, 503)  # this cycle's two attempts and the first of the next

    failed = watch_once(env)
    assert failed.reports[0]["patients"] == 1, "the inactive member is not watched"
    assert failed.reports[0]["undelivered"] == 1
    watch_once(env)  # a new process: the stored alert is sent again, not graded again
    attempts = [r for r in receiver.received() if r.json["patient"] == f"Patient/{pid}"]
    assert [r.status for r in attempts] == [503, 503, 503, 200]
    assert len({r.json["id"] for r in attempts}) == 1
    assert len({r.body for r in attempts}) == 1


def test_stale_data_alerts_once_and_writes_back_a_communication(
    fhir_server: RunningFhirServer, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    pid = "watch-stale-4e1b"
    fhir_server.load(
        [patient(60, patient_id=pid, at=now()), temp(f"{pid}-fever", 39.0, hours_before=6, patient_id=pid)]
    )
    env = watch_env(
        fhir_server,
        receiver,
        tmp_path / "watch.sqlite3",
        [pid],
        CRS_CDS_WATCH_STALE_AFTER_HOURS="4",
        CRS_CDS_WATCH_WRITEBACK="communication",
    )

    watch_once(env)
    watch_once(env)
    alerts = receiver.delivered_for(f"Patient/{pid}")
    assert sorted(a["kind"] for a in alerts) == ["grade-rise", "stale-data"]
    stale = next(a for a in alerts if a["kind"] == "stale-data")
    assert stale["references"] == [f"Observation/{pid}-fever"]
    assert "No temperature charted for 6" in stale["summary"]

    found = httpx.get(f"{fhir_server.base_url}/Communication", params={"subject": f"Patient/{pid}"}).json()
    written = [Communication.model_validate(e["resource"]) for e in found.get("entry", [])]
    identifiers = sorted(str(i.value) for c in written for i in c.identifier or [])
    assert identifiers == sorted(a["id"] for a in alerts)


ICANS_CODES = "http://hospital.example.org/fhir/CodeSystem/icans"


def ice_score(rid: str, score: int, *, minutes_before: float, patient_id: str) -> dict[str, Any]:
    out = observation(
        rid,
        concept(ICANS_CODES, "ICE-TOTAL", "ICE score total"),
        effective=when(minutes_before=minutes_before, at=now()),
        patient_id=patient_id,
        category="survey",
    )
    out["valueInteger"] = score
    return out


def test_icans_rise_alerts_on_its_own_system(
    fhir_server: RunningFhirServer, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    pid = "watch-icans-6d2e"
    fhir_server.load(
        [
            patient(55, patient_id=pid, at=now()),
            temp(f"{pid}-t0", 37.1, hours_before=1, patient_id=pid),
            ice_score(f"{pid}-ice-8", 8, minutes_before=50, patient_id=pid),
        ]
    )
    env = watch_env(fhir_server, receiver, tmp_path / "watch.sqlite3", [pid])
    watch_once(env)
    fhir_server.load([ice_score(f"{pid}-ice-4", 4, minutes_before=10, patient_id=pid)])
    watch_once(env)
    watch_once(env)
    alerts = receiver.delivered_for(f"Patient/{pid}")
    assert [(a["system"], a["grade"], a["previousGrade"]) for a in alerts] == [
        ("ASTCT-2019-ICANS", 1, None),
        ("ASTCT-2019-ICANS", 2, 1),
    ]
    assert f"Observation/{pid}-ice-4" in alerts[1]["references"]


def _next_report(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, "the watcher printed no cycle report in time"
    line = proc.stdout.readline()
    assert line, "the watcher exited"
    report: dict[str, Any] = json.loads(line)
    return report


def test_two_watchers_one_works_and_reads_changes_only(
    fhir_server: RunningFhirServer, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    pid = "watch-lease-8a0c"
    fhir_server.load([patient(30, patient_id=pid, at=now()), temp(f"{pid}-t0", 36.9, hours_before=1, patient_id=pid)])
    env = watch_env(
        fhir_server,
        receiver,
        tmp_path / "watch.sqlite3",
        [pid],
        CRS_CDS_WATCH_INTERVAL_S="1",
        CRS_CDS_WATCH_LEASE_S="60",
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "cds_hooks.cli", "watch"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        report = _next_report(first, RUN_TIMEOUT_S)
        assert report["leaseHeld"] is True and report["fullReads"] == 1

        second = watch_once(env)
        assert second.reports == [{**second.reports[0], "leaseHeld": False}]
        assert second.reports[0]["graded"] == 0

        fhir_server.load([temp(f"{pid}-fever", 38.8, hours_before=0.1, patient_id=pid)])
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while report["alerts"] == 0 and time.monotonic() < deadline:
            report = _next_report(first, RUN_TIMEOUT_S)
        assert report["alerts"] == 1 and report["fullReads"] == 0  # found by a _lastUpdated search
        assert [a["grade"] for a in receiver.delivered_for(f"Patient/{pid}")] == [1]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        if first.stdout is not None:
            first.stdout.close()
    assert first.returncode == 0

    taken_over = watch_once(env)  # the first gave up its lease on SIGTERM: the second works now
    assert taken_over.reports[0]["leaseHeld"] is True and taken_over.reports[0]["graded"] == 1
    assert len(receiver.delivered_for(f"Patient/{pid}")) == 1


# -- SMART Backend Services against a server that demands it -------------------------------------

CLIENT_ID = "crs-watch-client"
LOAD_TOKEN = "loader-token-3e7d"


def _p384_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture(scope="module")
def smart_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningFhirServer, Path]]:
    """A second FHIR server that accepts only SMART Backend Services tokens (and a loader token)."""
    key = _p384_key(tmp_path_factory.mktemp("keys") / "watch-es384.pem")
    auth = {
        "types": ["smart", "bearer"],
        "tokens": [LOAD_TOKEN],
        "smart_clients": [{"client_id": CLIENT_ID, "public_key_path": str(key), "scopes": "system/*.rs"}],
    }
    with RunningFhirServer(server_auth=auth, load_token=LOAD_TOKEN) as server:
        yield server, key


def test_backend_services_token_reads_a_protected_server(
    smart_server: tuple[RunningFhirServer, Path], receiver: WebhookReceiver, tmp_path: Path
) -> None:
    server, key = smart_server
    pid = "watch-smart-51c2"
    server.load([patient(45, patient_id=pid, at=now()), temp(f"{pid}-fever", 38.9, hours_before=0.3, patient_id=pid)])
    assert httpx.get(f"{server.base_url}/Patient/{pid}").status_code == 401, "the server really demands a token"
    env = watch_env(server, receiver, tmp_path / "watch.sqlite3", [pid])
    del env["CRS_CDS_WATCH_TOKEN"]
    env.update({"CRS_CDS_WATCH_CLIENT_ID": CLIENT_ID, "CRS_CDS_WATCH_PRIVATE_KEY_FILE": str(key)})

    run = watch_once(env)
    assert run.reports[0]["graded"] == 1 and run.reports[0]["error"] is None
    assert [a["grade"] for a in receiver.delivered_for(f"Patient/{pid}")] == [1]
    assert_no_secrets(run.stderr, pid)

    wrong_key = _p384_key(tmp_path / "not-registered.pem")
    refused = watch_once({**env, "CRS_CDS_WATCH_PRIVATE_KEY_FILE": str(wrong_key)}, exit_code=3)
    assert "token endpoint refused the client (401" in refused.stderr
    assert len(receiver.delivered_for(f"Patient/{pid}")) == 1
