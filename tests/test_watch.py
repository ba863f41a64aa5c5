"""The watcher's parts other than the rules (issue 15): settings, store and lease on both database
backends, SMART Backend Services tokens, incremental reading, signed delivery, R4B write-back.

FHIR server, token endpoint and webhook are respx mocks here; the end-to-end run against a real
FHIR server is ``tests/integration/test_watch_integration.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cds_hooks.pipeline.evaluate import Grading
from cds_hooks.reading.fhir_client import FetchPolicy, FhirFetcher
from cds_hooks.reading.prefetch import build_prefetch
from cds_hooks.reading.record import DataSource
from cds_hooks.settings import Settings
from cds_hooks.stores.watch_store import StoredAlert, WatchStore
from cds_hooks.watch.access import AccessError, BackendServicesToken, load_signing_key
from cds_hooks.watch.config import BackendServices, WatchConfig, WatchConfigError, WebhookConfig
from cds_hooks.watch.delivery import SIGNATURE_HEADER, WebhookSender, alert_body
from cds_hooks.watch.reading import ChartReader
from cds_hooks.watch.writeback import WritebackError, build_resource
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pg_server import RunningPostgres

FHIR = "https://fhir.example.org/r4"
HOOK = "https://pager.example.org/crs"
SECRET = "a-webhook-secret-of-24-chars"
AT = datetime(2025, 3, 4, 8, 0, tzinfo=UTC)

# -- settings ---------------------------------------------------------------------------------

BASE: dict[str, Any] = {"fhir_server_allowlist": [FHIR], "watch_fhir_server": FHIR}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"watch_fhir_server": "https://other.example.org/fhir"},
            "must be on fhir_server_allowlist",
            id="server-not-allowlisted",
        ),
        pytest.param({"watch_webhook_url": "http://pager.example.org/x"}, "https", id="webhook-plain-http"),
        pytest.param({"watch_webhook_url": "http://localhost.example.org/x"}, "https", id="webhook-fake-loopback"),
        pytest.param({"watch_webhook_secret": "short"}, "16 characters", id="secret-too-short"),
        pytest.param({"watch_patients": "p1,../Group/x"}, "FHIR ids", id="patient-id-not-fhir-id"),
        pytest.param({"watch_patients": "p1", "watch_group": "g1"}, "not both", id="patients-and-group"),
        pytest.param({"watch_client_id": "c1"}, "go together", id="client-without-key"),
        pytest.param({"watch_interval_s": 600, "watch_lease_s": 300}, "longer", id="lease-shorter-than-interval"),
    ],
)
def test_watch_settings_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**{**BASE, **values})


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://pager.example.org/crs", id="https"),
        pytest.param("http://127.0.0.1:9999/alerts", id="loopback-ipv4"),
        pytest.param("http://localhost:9999/alerts", id="localhost"),
    ],
)
def test_webhook_url_accepted(url: str) -> None:
    assert Settings(**BASE, watch_webhook_url=url).watch_webhook_url == url


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({}, "WATCH_PATIENTS", id="no-patients"),
        pytest.param({"watch_patients": "p1"}, "WEBHOOK_URL", id="no-webhook"),
        pytest.param(
            {"watch_patients": "p1", "watch_webhook_url": HOOK, "watch_webhook_secret": SECRET}, "TOKEN", id="no-access"
        ),
    ],
)
def test_watch_config_needs_what_it_works_with(values: dict[str, Any], message: str) -> None:
    with pytest.raises(WatchConfigError, match=message):
        WatchConfig.from_settings(Settings(**{**BASE, **values}))


def test_watch_config_hides_token_and_secret() -> None:
    settings = Settings(
        **BASE, watch_patients="p1", watch_webhook_url=HOOK, watch_webhook_secret=SECRET, watch_token="tok-xyz-123"
    )
    config = WatchConfig.from_settings(settings)
    assert "tok-xyz" not in repr(config) and SECRET not in repr(config)
    assert "tok-xyz" not in repr(settings) and SECRET not in repr(settings)


# -- store and lease, SQLite and PostgreSQL ----------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[RunningPostgres]:
    with RunningPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WatchStore]:
    if request.param == "sqlite":
        opened = WatchStore.open(f"sqlite:///{tmp_path / 'watch.sqlite3'}")
    else:
        server: RunningPostgres = request.getfixturevalue("postgres")
        opened = WatchStore.open(server.url)
        tables = ("watch_state", "watch_alert", "watch_delivery", "watch_lease")
        opened.database.run(lambda tx: [tx.execute(f"DELETE FROM {table}") for table in tables])
    yield opened
    opened.close()


def _alert(alert_id: str = "a1") -> StoredAlert:
    body = {"id": alert_id, "kind": "grade-rise", "system": "ASTCT-2019", "grade": 2, "previousGrade": 1}
    return StoredAlert(alert_id, "hash1", "grade-rise", "ASTCT-2019", 2, AT, {**body, "at": "2025-03-04T08:00:00Z"})


def test_lease_one_holder_until_it_expires(store: WatchStore) -> None:
    assert store.take_lease("w", "first", ttl_s=60, now_s=1000)
    store.database._drop()  # the connection broke (database restart, failover): the lease is a row, not a session
    assert store.take_lease("w", "first", ttl_s=60, now_s=1010), "renewed after the reconnect"
    assert not store.take_lease("w", "second", ttl_s=60, now_s=1030), "held and not expired"
    assert store.take_lease("w", "first", ttl_s=60, now_s=1050), "the holder renews"
    assert not store.take_lease("w", "second", ttl_s=60, now_s=1100), "renewed until 1110"
    assert store.take_lease("w", "second", ttl_s=60, now_s=1111), "expired: taken over"
    assert not store.take_lease("w", "first", ttl_s=60, now_s=1112)
    store.release_lease("w", "first")  # not the holder: no effect
    assert store.lease_holder("w", now_s=1112) == "second"
    store.release_lease("w", "second")
    assert store.take_lease("w", "first", ttl_s=60, now_s=1113)


def test_alert_stored_once_with_state_and_delivered_once(store: WatchStore) -> None:
    store.save_cycle("hash1", {"systems": {}}, [_alert()])
    store.save_cycle("hash1", {"systems": {"x": 1}}, [_alert()])  # the same id again: kept once
    assert [a.alert_id for a in store.undelivered()] == ["a1"]
    assert store.load_state("hash1") == {"systems": {"x": 1}}
    store.record_delivery("a1", attempt=1, status_code=503, error="webhook answered HTTP 503", delivered=False)
    store.record_delivery("a1", attempt=2, status_code=200, error=None, delivered=True)
    assert store.undelivered() == []
    assert [(r["attempt"], r["status_code"], r["delivered"]) for r in store.delivery_rows()] == [
        (1, 503, 0),
        (2, 200, 1),
    ]
    assert all("patient" not in r["body"] for r in store.alert_rows())


# -- SMART Backend Services ---------------------------------------------------------------------


def _key_file(tmp_path: Path, kind: str) -> tuple[Path, Any]:
    key: Any = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / f"{kind}.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path, key.public_key()


@pytest.mark.parametrize(
    ("kind", "algorithm"),
    [pytest.param("rsa", "RS384", id="rsa->RS384"), pytest.param("ec", "ES384", id="p384->ES384")],
)
def test_backend_services_token(tmp_path: Path, kind: str, algorithm: str) -> None:
    asyncio.run(_test_backend_services_token(tmp_path, kind, algorithm))


async def _test_backend_services_token(tmp_path: Path, kind: str, algorithm: str) -> None:
    path, public = _key_file(tmp_path, kind)
    config = BackendServices("watcher-1", path, "kid-1", "system/Observation.rs")
    source = BackendServicesToken(FHIR, config, allow_insecure=False)
    seen: list[dict[str, list[str]]] = []

    def token(request: httpx.Request) -> httpx.Response:
        seen.append(parse_qs(request.content.decode()))
        return httpx.Response(200, json={"access_token": "at-1", "token_type": "bearer", "expires_in": 300})

    with respx.mock(assert_all_called=True) as router:
        router.get(f"{FHIR}/.well-known/smart-configuration").respond(
            json={"token_endpoint": "https://auth.example.org/token"}
        )
        router.post("https://auth.example.org/token").mock(side_effect=token)
        async with httpx.AsyncClient() as client:
            assert await source.token(client) == "at-1"
            assert await source.token(client) == "at-1"  # cached: one token request
    assert len(seen) == 1
    form = seen[0]
    assert form["grant_type"] == ["client_credentials"]
    assert form["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    assertion = form["client_assertion"][0]
    assert jwt.get_unverified_header(assertion)["alg"] == algorithm
    assert jwt.get_unverified_header(assertion)["kid"] == "kid-1"
    claims = jwt.decode(assertion, public, algorithms=[algorithm], audience="https://auth.example.org/token")
    assert claims["iss"] == claims["sub"] == "watcher-1"
    assert claims["exp"] - claims["iat"] <= 300


@pytest.mark.parametrize(
    ("endpoint", "status", "message"),
    [
        pytest.param("http://auth.example.org/token", 200, "https", id="http-token-endpoint"),
        pytest.param("https://auth.example.org/token", 401, "refused", id="client-refused"),
    ],
)
def test_backend_services_refusals(tmp_path: Path, endpoint: str, status: int, message: str) -> None:
    asyncio.run(_test_backend_services_refusals(tmp_path, endpoint, status, message))


async def _test_backend_services_refusals(tmp_path: Path, endpoint: str, status: int, message: str) -> None:
    path, _ = _key_file(tmp_path, "ec")
    source = BackendServicesToken(FHIR, BackendServices("c", path, None, "s"), allow_insecure=False)
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{FHIR}/.well-known/smart-configuration").respond(json={"token_endpoint": endpoint})
        router.post(endpoint).respond(status, json={"error": "invalid_client"})
        async with httpx.AsyncClient() as client:
            with pytest.raises(AccessError, match=message):
                await source.token(client)


def test_weak_keys_refused() -> None:
    weak = ec.generate_private_key(ec.SECP256R1())
    pem = weak.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(AccessError, match="P-384"):
        load_signing_key(pem)


# -- reading: _lastUpdated and the full re-read ---------------------------------------------------


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def _temp(rid: str, celsius: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2025-03-04T07:00:00Z",
        "valueQuantity": {"value": celsius, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"},
    }


def test_reading_asks_for_changes_then_in_full(grading: Grading) -> None:
    asyncio.run(_test_reading_asks_for_changes_then_in_full(grading))


async def _test_reading_asks_for_changes_then_in_full(grading: Grading) -> None:
    queries: list[str] = []
    served = {"Observation": [_temp("t1", 37.0)]}

    def answer(request: httpx.Request) -> httpx.Response:
        queries.append(str(request.url))
        kind = request.url.path.rsplit("/", 2)[-1] if "Patient/" not in str(request.url) else "Patient"
        if kind == "Patient" or request.url.path.endswith("/Patient/p1"):
            return httpx.Response(200, json={"resourceType": "Patient", "id": "p1"})
        if kind == "Observation" and "code=" in str(request.url):
            return httpx.Response(200, json=_bundle(*served["Observation"]))
        return httpx.Response(200, json=_bundle())

    policy = FetchPolicy(allowlist=frozenset({FHIR}))
    with respx.mock() as router:
        router.route(host="fhir.example.org").mock(side_effect=answer)
        async with httpx.AsyncClient() as client:
            reader = ChartReader(
                FhirFetcher(client, policy), FHIR, build_prefetch(grading.terminology), full_read=timedelta(hours=1)
            )
            first = await reader.read("p1", at=AT, access_token="t")
            served["Observation"] = [_temp("t2", 39.0)]  # a change: only the new resource comes back
            queries.clear()
            second = await reader.read("p1", at=AT + timedelta(minutes=5), access_token="t")
            incremental = [q for q in queries if "?" in q]
            queries.clear()
            served["Observation"] = [_temp("t2", 39.0)]  # t1 deleted on the server
            third = await reader.read("p1", at=AT + timedelta(hours=1, minutes=1), access_token="t")
    assert first.full and not second.full and third.full
    assert incremental and all(
        "_lastUpdated=ge2025-03-04T07%3A55%3A00Z" in q or "_lastUpdated=ge2025-03-04T07:55:00Z" in q
        for q in incremental
    )
    assert {r.reference for r in second.resources} >= {"Observation/t1", "Observation/t2"}
    assert not any("_lastUpdated" in q for q in queries), "the full re-read asks for everything"
    assert "Observation/t1" not in {r.reference for r in third.resources}, "a deletion is seen at the full re-read"


def test_failed_read_is_unavailable_not_empty(grading: Grading) -> None:
    asyncio.run(_test_failed_read_is_unavailable_not_empty(grading))


async def _test_failed_read_is_unavailable_not_empty(grading: Grading) -> None:
    policy = FetchPolicy(allowlist=frozenset({FHIR}))
    with respx.mock() as router:
        router.route(host="fhir.example.org").mock(side_effect=httpx.ConnectError("down"))
        async with httpx.AsyncClient() as client:
            reader = ChartReader(
                FhirFetcher(client, policy), FHIR, build_prefetch(grading.terminology), full_read=timedelta(hours=1)
            )
            read = await reader.read("p1", at=AT, access_token=None)
    assert DataSource.PATIENT in read.unavailable and DataSource.OBSERVATIONS in read.unavailable


# -- delivery ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "delivered", "attempts"),
    [
        pytest.param([200], True, 1, id="200->delivered-first-try"),
        pytest.param([503, 502, 200], True, 3, id="503-503-200->delivered-third-try"),
        pytest.param([503, 503, 503], False, 3, id="503x3->undelivered-kept"),
        pytest.param([400], False, 1, id="400->not-retried-this-cycle"),
    ],
)
def test_delivery_signed_retried_recorded(tmp_path: Path, statuses: list[int], delivered: bool, attempts: int) -> None:
    asyncio.run(_test_delivery_signed_retried_recorded(tmp_path, statuses, delivered, attempts))


async def _test_delivery_signed_retried_recorded(
    tmp_path: Path, statuses: list[int], delivered: bool, attempts: int
) -> None:
    store = WatchStore.open(f"sqlite:///{tmp_path / 'w.sqlite3'}")
    store.save_cycle("hash1", {}, [_alert()])
    config = WebhookConfig(HOOK, SECRET.encode(), attempts=3, backoff_s=0.5, timeout_s=5)
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    with respx.mock() as router:
        route = router.post(HOOK).mock(side_effect=[httpx.Response(s) for s in statuses])
        async with httpx.AsyncClient() as client:
            sender = WebhookSender(client, config, store, sleep=no_wait)
            ok = await sender.deliver(store.undelivered()[0], "p1", extra_log={})
    assert ok is delivered
    assert route.call_count == attempts
    bodies = {call.request.content for call in route.calls}
    assert len(bodies) == 1, "the same body (and id) on every attempt"
    body = bodies.pop()
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert all(call.request.headers[SIGNATURE_HEADER] == expected for call in route.calls)
    assert waits == [0.5, 1.0][: attempts - 1], "backoff doubles between attempts, none after the last"
    assert len(store.delivery_rows()) == attempts
    assert (store.undelivered() == []) is delivered
    store.close()


def test_body_names_the_patient_only_when_sent() -> None:
    body = alert_body(_alert(), "p1")
    assert b'"patient":"Patient/p1"' in body
    assert "patient" not in _alert().body


# -- write-back ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "resource_type"),
    [pytest.param("communication", "Communication", id="communication"), pytest.param("flag", "Flag", id="flag")],
)
def test_writeback_resource_is_valid_r4b(kind: str, resource_type: str) -> None:
    body = {**alert_body_dict(), "patient": "Patient/p1"}
    resource = build_resource(kind, body)
    assert resource["resourceType"] == resource_type
    assert resource["subject"] == {"reference": "Patient/p1"}
    assert resource["identifier"][0]["value"] == "a1"


def test_writeback_refuses_invalid_resource() -> None:
    body = {**alert_body_dict(), "patient": "Patient/p1", "at": "not a time"}
    with pytest.raises(WritebackError, match="R4B"):
        build_resource("communication", body)


def alert_body_dict() -> dict[str, Any]:
    return {
        "id": "a1",
        "kind": "grade-rise",
        "system": "ASTCT-2019",
        "grade": 3,
        "previousGrade": 1,
        "at": "2025-03-04T08:00:00Z",
        "references": ["Observation/t1"],
        "summary": "CRS (ASTCT 2019) grade 3",
    }


# -- the cycle: an outage never reads as grade 0 ------------------------------------------------


def _watch_settings(tmp_path: Path) -> Settings:
    return Settings(
        **BASE,
        watch_patients="p1",
        watch_token="tok-abc-123",
        watch_webhook_url=HOOK,
        watch_webhook_secret=SECRET,
        watch_webhook_attempts=1,
        database_url=f"sqlite:///{tmp_path / 'w.sqlite3'}",
    )


@pytest.mark.parametrize(
    "outage",
    [
        pytest.param(httpx.ConnectError("down"), id="server-unreachable->not-graded"),
        pytest.param(httpx.Response(500), id="server-500->not-graded"),
        pytest.param(
            httpx.Response(200, json={"resourceType": "OperationOutcome", "issue": []}),
            id="operation-outcome->not-graded",
        ),
    ],
)
def test_outage_between_cycles_neither_resets_nor_repeats(
    grading: Grading, tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: Any
) -> None:
    asyncio.run(_outage(grading, tmp_path, caplog, outage))


async def _outage(grading: Grading, tmp_path: Path, caplog: pytest.LogCaptureFixture, outage: Any) -> None:
    from cds_hooks.watch.worker import Watcher

    config = WatchConfig.from_settings(_watch_settings(tmp_path))
    store = WatchStore.open(config.database_url)
    clock = iter([AT + timedelta(minutes=5 * i) for i in range(100)])
    fever = {**_temp("t1", 39.1), "effectiveDateTime": "2025-03-04T07:30:00Z"}
    down = False

    def fhir(request: httpx.Request) -> httpx.Response:
        if down:
            if isinstance(outage, Exception):
                raise outage
            assert isinstance(outage, httpx.Response)
            return outage
        if request.url.path.endswith("/Patient/p1"):
            return httpx.Response(200, json={"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"})
        if request.url.path.endswith("/Observation") and "category=" in str(request.url):
            return httpx.Response(200, json=_bundle(fever))
        return httpx.Response(200, json=_bundle())

    with respx.mock() as router, caplog.at_level("DEBUG"):
        router.route(host="fhir.example.org").mock(side_effect=fhir)
        hook = router.post(HOOK).respond(200)
        async with httpx.AsyncClient() as client:
            watcher = Watcher(config, grading, store, client, clock=lambda: next(clock))
            first = await watcher.cycle()
            board_first = store.load_board(watcher_hash())
            down = True
            outage_report = await watcher.cycle()
            state_during_outage = store.load_state(watcher_hash())
            board_during_outage = store.load_board(watcher_hash())
            down = False
            back = await watcher.cycle()
    assert (first.graded, first.alerts, first.delivered) == (1, 1, 1)
    assert (outage_report.graded, outage_report.ungraded, outage_report.alerts) == (0, 1, 0)
    assert state_during_outage is not None and state_during_outage["systems"]["ASTCT-2019"]["alertedGrade"] == 1
    assert (back.graded, back.alerts) == (1, 0), "the same grade after the outage is not a new event"
    # The board row is written each graded cycle and left alone by the outage (never "grade 0").
    assert board_first is not None and board_first["crs"]["gradeAtLeast"] == 1
    assert board_during_outage == board_first
    board_after = store.load_board(watcher_hash())
    assert board_after is not None and [p["crs"] for p in board_after["trend"]] == [1, 1]
    assert hook.call_count == 1
    ours = [r for r in caplog.records if r.name.startswith("crs_cds")]  # httpx is silenced by configure_logging
    assert ours and not any("p1" in str(r.__dict__) or "tok-abc-123" in str(r.__dict__) for r in ours)
    store.close()


def watcher_hash() -> str:
    from cds_hooks.stores.feedback_store import patient_hash

    return patient_hash("p1")


def test_store_down_means_no_work_this_cycle(grading: Grading, tmp_path: Path) -> None:
    from cds_hooks.stores.database import StoreUnavailable
    from cds_hooks.watch.worker import Watcher

    config = WatchConfig.from_settings(_watch_settings(tmp_path))
    store = WatchStore.open(config.database_url)

    def down(*args: Any, **kwargs: Any) -> bool:
        raise StoreUnavailable("SQLite unavailable: OperationalError")

    store.take_lease = down  # type: ignore[method-assign]

    async def one_cycle() -> Any:
        with respx.mock(assert_all_called=False) as router:
            fhir = router.route(host="fhir.example.org").respond(500)
            async with httpx.AsyncClient() as client:
                report = await Watcher(config, grading, store, client).cycle()
            return report, fhir.call_count

    report, calls = asyncio.run(one_cycle())
    assert report.lease_held is False and report.error is not None and "unavailable" in report.error
    assert calls == 0, "without knowing who holds the lease the watcher reads nothing"
    store.close()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({}, "CRS_CDS_WATCH_FHIR_SERVER is required", id="nothing-set->names-the-server-setting"),
        pytest.param(
            {"CRS_CDS_FHIR_SERVER_ALLOWLIST": FHIR, "CRS_CDS_WATCH_FHIR_SERVER": FHIR, "CRS_CDS_WATCH_PATIENTS": "p1"},
            "WEBHOOK_URL",
            id="no-webhook->names-it",
        ),
        pytest.param(
            {"CRS_CDS_WATCH_WEBHOOK_URL": "http://pager.example.org/x"},
            "invalid settings",
            id="plain-http-webhook->refused",
        ),
    ],
)
def test_watch_command_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], message: str
) -> None:
    from cds_hooks.cli import EXIT_USAGE, main

    for name in [n for n in os.environ if n.startswith("CRS_CDS_WATCH_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["watch", "--once"]) == EXIT_USAGE
    assert message in capsys.readouterr().err
