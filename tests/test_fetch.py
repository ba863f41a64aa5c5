"""Fetching absent prefetch keys from ``fhirServer`` (issue 3), with every fault injected by respx.

Why respx through the whole app: each fault must surface as something a CDS client can act on
(a 412 with a short reason, or a card naming what could not be fetched), the security rules
(allow-list, https, same-origin paging, no redirects) must hold before any byte leaves, and the
access token must reach the FHIR server and nowhere else: no log record, no response, no card.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import respx
from cds_hooks.cli import EXIT_UNAVAILABLE, EXIT_USAGE, TOKEN_ENV, main
from cds_hooks.logging_setup import LIBRARY_LOGGERS, configure_logging
from cds_hooks.reading.labs import builtin_labs
from cds_hooks.reading.prefetch import build_icans_prefetch, build_lab_prefetch, build_prefetch
from cds_hooks.reading.terminology import load_terminology
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from fastapi.testclient import TestClient

from hook_requests import patient_view, prefetch_from_bundle

VIGNETTES = Path(__file__).parent / "fixtures" / "vignettes"
EXPECTED: dict[str, dict[str, Any]] = json.loads((VIGNETTES / "expected.json").read_text())
PREFETCH_KEYS = (
    *build_prefetch(load_terminology()),
    *build_icans_prefetch(load_terminology()),
    *build_lab_prefetch(builtin_labs(), load_terminology()),
)
QUERIES = len(PREFETCH_KEYS)
OBSERVATION_QUERIES = sum(1 for key in PREFETCH_KEYS if key.template.startswith("Observation?"))
BASE = "https://ehr.example.org/fhir"
EVIL = "https://evil.example.net/fhir"
TOKEN = "tok-Q7vZ9-never-log-me-3KpX"
SERVICE = "/cds-services/crs-grade"
GRADING = "crs-cds-hooks.grading"
AT = "2025-03-04T08:00:00Z"
PATIENT = "v02"
"""V02: fever only, ASTCT grade 1; its grade can only be claimed with the medications known."""
MAX_PAGES = 4

SideEffect = Callable[[httpx.Request], httpx.Response]


def _bundle(vignette_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VIGNETTES / f"{vignette_id}.bundle.json").read_text())
    return data


def _resources(vignette_id: str) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in _bundle(vignette_id)["entry"]]


# -- a FHIR server in memory -------------------------------------------------------------------


def _tokens(concept: object) -> set[str]:
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    return {f"{c.get('system')}|{c.get('code')}" for c in codings if isinstance(c, dict)}


@dataclass
class FakeEhr:
    """Answers reads and the templates' searches (patient, code, value-concept, category) like a FHIR server,
    with ``_offset`` paging and same-origin ``next`` links; records every request it sees."""

    resources: list[dict[str, Any]]
    page_size: int | None = None
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/fhir/")
        if "/" in path:
            kind, rid = path.split("/", 1)
            for resource in self.resources:
                if resource["resourceType"] == kind and resource["id"] == rid:
                    return httpx.Response(200, json=resource)
            return httpx.Response(404, json=_outcome("not-found", f"{kind}/{rid} not found"))
        return self._search(path, request.url.params)

    def _search(self, kind: str, params: httpx.QueryParams) -> httpx.Response:
        def wanted(resource: dict[str, Any]) -> bool:
            if resource["resourceType"] != kind:
                return False
            subject = resource.get("subject", {}).get("reference")
            if "patient" in params and subject != f"Patient/{params['patient']}":
                return False
            for name, element in (("code", "code"), ("value-concept", "valueCodeableConcept")):
                if name in params and not _tokens(resource.get(element)) & set(params[name].split(",")):
                    return False
            if "category" in params:
                categories = set().union(*(_tokens(c) for c in resource.get("category", [])))
                if not categories & set(params["category"].split(",")):
                    return False
            return True

        matches = [r for r in self.resources if wanted(r)]
        offset = int(params.get("_offset", "0"))
        size = self.page_size or max(len(matches), 1)
        page = matches[offset : offset + size]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": [
                {"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                for r in page
            ],
        }
        if offset + size < len(matches):
            query = [(k, v) for k, v in params.multi_items() if k != "_offset"] + [("_offset", str(offset + size))]
            bundle["link"] = [{"relation": "next", "url": f"{BASE}/{kind}?{urlencode(query)}"}]
        return httpx.Response(200, json=bundle)

    def of_type(self, kind: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.removeprefix("/fhir/").split("/")[0] == kind]


def _outcome(code: str, text: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


@dataclass
class Ehr:
    """The mocked network: the fake EHR, optional per-type faults in front of it, and a trap for
    any request to another host (which must never be sent)."""

    router: respx.MockRouter
    fake: FakeEhr
    elsewhere: respx.Route

    def fail(self, kind: str, effect: Any) -> respx.Route:
        """Make every request for ``kind`` (a read or a search, any page) end in ``effect``."""
        route = self.router.route(host="ehr.example.org", path__regex=rf"^/fhir/{kind}(/|$)")
        route.side_effect = effect
        return route


@pytest.fixture
def ehr() -> Iterator[Ehr]:
    with respx.mock(assert_all_called=False) as router:
        fake = FakeEhr(_resources(PATIENT.upper()))
        elsewhere = router.route(host__regex=r"^(?!ehr\.example\.org$)").respond(599)
        # Routes match in the order added: tests add faults first, then _install() the fake.
        yield Ehr(router, fake, elsewhere)
        assert not elsewhere.called, [str(c.request.url) for c in elsewhere.calls]


def _install(ehr: Ehr) -> None:
    """Install the fake EHR as the last route, behind any faults the test added first."""
    ehr.router.route(host="ehr.example.org").mock(side_effect=ehr.fake.handle)


@pytest.fixture(autouse=True)
def no_token_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every logger at DEBUG for the whole test; afterwards no record may carry the token."""
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    # At teardown ``caplog.records`` holds only teardown records: check every phase explicitly.
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    for record in records:
        text = f"{record.getMessage()} {record.args!r} {record.__dict__!r}"
        assert TOKEN not in text, f"token logged by {record.name}"
        assert "Bearer" not in text, f"'Bearer' logged by {record.name}: {record.getMessage()}"


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"fhir_server_allowlist": [BASE], "fhir_max_pages": MAX_PAGES}
    values.update(overrides)
    return Settings(**values)


def _authorization(token: str = TOKEN) -> dict[str, Any]:
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "crs-cds",
    }


def _request(
    patient_id: str = PATIENT,
    *,
    prefetch: dict[str, Any] | None = None,
    fhir_server: str | None = BASE,
    token: str | None = TOKEN,
    at: str = AT,
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if fhir_server is not None:
        extra["fhirServer"] = fhir_server
    if token is not None:
        extra["fhirAuthorization"] = _authorization(token)
    return patient_view(patient_id, prefetch=prefetch, at=at, **extra)


def _post(body: dict[str, Any], settings: Settings | None = None) -> httpx.Response:
    """One hook call through a fresh app (lifespan included); the token must not come back."""
    with TestClient(create_app(settings or _settings())) as client:
        response: httpx.Response = client.post(SERVICE, json=body)
    assert TOKEN not in response.text
    assert "Bearer" not in response.text
    return response


def _grading(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    result: dict[str, Any] = card["extension"][GRADING][0]
    return result


def _reason(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    reason: str = body["issue"][0]["diagnostics"]
    assert len(reason) < 400
    return reason


# -- faults --------------------------------------------------------------------------------------


def _raise(exc: Exception) -> SideEffect:
    def effect(request: httpx.Request) -> httpx.Response:
        raise exc

    return effect


def _status(code: int, **kwargs: Any) -> SideEffect:
    def effect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, **kwargs)

    return effect


def _next_to(target: Callable[[httpx.Request], str]) -> SideEffect:
    """A valid one-entry page whose ``next`` link points wherever ``target`` says."""

    def effect(request: httpx.Request) -> httpx.Response:
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": target(request)}],
        }
        return httpx.Response(200, json=bundle)

    return effect


@dataclass(frozen=True)
class Fault:
    effect: SideEffect
    reason: str
    """A fragment the 412 reason or the card's "missing" text must contain."""


FAULTS: dict[str, Fault] = {
    "connect-error": Fault(_raise(httpx.ConnectError("connection refused")), "FHIR server unreachable"),
    "connect-timeout": Fault(_raise(httpx.ConnectTimeout("connect timed out")), "timed out"),
    "read-timeout": Fault(_raise(httpx.ReadTimeout("read timed out")), "timed out"),
    "http-401": Fault(_status(401), "refused by the FHIR server (401)"),
    "http-403": Fault(_status(403), "refused by the FHIR server (403)"),
    "http-404-on-search": Fault(_status(404, json=_outcome("not-found", "no such type")), "HTTP 404"),
    "http-500": Fault(_status(500, text="Internal Server Error"), "HTTP 500"),
    "http-503": Fault(_status(503), "HTTP 503"),
    "redirect-to-other-origin": Fault(_status(302, headers={"Location": f"{EVIL}/Observation"}), "HTTP 302"),
    "next-link-to-other-origin": Fault(_next_to(lambda request: f"{EVIL}/page2"), "another server"),
    "endless-next-loop": Fault(_next_to(lambda request: str(request.url)), f"more than {MAX_PAGES} pages"),
    "html-not-json": Fault(_status(200, text="<html>login</html>"), "not a FHIR Bundle"),
    "json-array-not-a-bundle": Fault(_status(200, json=[1, 2]), "not a FHIR Bundle"),
    "resource-not-a-bundle": Fault(_status(200, json={"resourceType": "Basic", "id": "x"}), "not a FHIR Bundle"),
    "bundle-entry-not-a-list": Fault(_status(200, json={"resourceType": "Bundle", "entry": {}}), "not a FHIR Bundle"),
    "bundle-unreadable-entries": Fault(
        _status(200, json={"resourceType": "Bundle", "type": "searchset", "entry": [{"x": 1}]}), "malformed"
    ),
    "operation-outcome-200": Fault(_status(200, json=_outcome("exception", "index offline")), "index offline"),
}


@pytest.mark.parametrize("fault", [pytest.param(f, id=f"{name}-on-Observation") for name, f in FAULTS.items()])
def test_observation_fault_is_412_with_a_reason(ehr: Ehr, fault: Fault) -> None:
    route = ehr.fail("Observation", fault.effect)
    _install(ehr)
    response = _post(_request())
    assert response.status_code == 412
    reason = _reason(response)
    assert reason.startswith("Observation data could not be obtained")
    assert fault.reason in reason
    assert route.called
    assert len(route.calls) <= OBSERVATION_QUERIES * MAX_PAGES  # each Observation search capped


@pytest.mark.parametrize(
    "fault", [pytest.param(f, id=f"{name}-on-MedicationAdministration") for name, f in FAULTS.items()]
)
def test_medication_fault_grades_what_the_data_prove(ehr: Ehr, fault: Fault) -> None:
    ehr.fail("MedicationAdministration", fault.effect)
    _install(ehr)
    result = _grading(_post(_request()))
    assert "grade" not in result, "a grade must not be claimed without the medications"
    assert result["status"] == "indeterminate"
    assert result["gradeAtLeast"] == EXPECTED["V02"]["astct_crs_grade"]
    (missing,) = [m for m in result["missing"] if m.startswith("MedicationAdministration data unavailable")]
    assert fault.reason in missing


PATIENT_FAULTS = ["connect-error", "read-timeout", "http-401", "http-500", "html-not-json", "operation-outcome-200"]


@pytest.mark.parametrize("name", PATIENT_FAULTS, ids=[f"{n}-on-Patient" for n in PATIENT_FAULTS])
def test_patient_fault_is_412(ehr: Ehr, name: str) -> None:
    ehr.fail("Patient", FAULTS[name].effect)
    _install(ehr)
    response = _post(_request())
    assert response.status_code == 412
    assert _reason(response).startswith("Patient data could not be obtained")


def test_patient_read_answering_another_type_is_412(ehr: Ehr) -> None:
    ehr.fail("Patient", _status(200, json={"resourceType": "Observation", "id": "v02"}))
    _install(ehr)
    response = _post(_request())
    assert response.status_code == 412
    assert "not a FHIR Patient" in _reason(response)


def test_patient_read_404_is_no_data_and_still_graded(ehr: Ehr) -> None:
    ehr.fake.resources = [r for r in ehr.fake.resources if r["resourceType"] != "Patient"]
    _install(ehr)
    result = _grading(_post(_request()))
    assert result["grade"] == EXPECTED["V02"]["astct_crs_grade"]
    assert not any("Patient" in m for m in result.get("missing", []))
    assert [r.url.path for r in ehr.fake.of_type("Patient")] == ["/fhir/Patient/v02"]


def test_budget_overrun_keeps_the_queries_that_finished(ehr: Ehr) -> None:
    """One search hanging past the hook's time budget must not throw away the others (no 412)."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3)
        return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})

    ehr.fail("MedicationAdministration", hang)
    _install(ehr)
    started = time.monotonic()
    result = _grading(_post(_request(), _settings(hook_time_budget_seconds=0.5)))
    assert time.monotonic() - started < 2.5
    assert result["gradeAtLeast"] == 1
    assert any("MedicationAdministration" in m and "time budget" in m for m in result["missing"])


# -- SSRF and token safety -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "fhir_server", "reason"),
    [
        pytest.param({}, "https://other.example.org/fhir", "allow-list", id="not-allow-listed"),
        pytest.param({}, f"{BASE}/Patient", "allow-list", id="path-below-allow-listed-base"),
        pytest.param({}, "https://ehr.example.org", "allow-list", id="parent-of-allow-listed-base"),
        pytest.param({"fhir_server_allowlist": []}, BASE, "allow-list", id="empty-allow-list"),
        pytest.param(
            {"fhir_server_allowlist": ["http://ehr.example.org/fhir"]},
            "http://ehr.example.org/fhir",
            "https",
            id="http-without-insecure-flag",
        ),
        pytest.param({}, "https://user:pw@ehr.example.org/fhir", "credentials", id="credentials-in-url"),
        pytest.param({}, "file:///etc/passwd", "http(s) URL", id="not-http"),
    ],
)
def test_refused_fhir_server_is_412_and_nothing_is_sent(
    ehr: Ehr, settings: dict[str, Any], fhir_server: str, reason: str
) -> None:
    _install(ehr)
    response = _post(_request(fhir_server=fhir_server), _settings(**settings))
    assert response.status_code == 412
    assert reason in _reason(response)
    assert ehr.router.calls.call_count == 0


def test_http_server_allowed_with_insecure_flag(ehr: Ehr) -> None:
    http_base = "http://ehr.example.org/fhir"
    _install(ehr)
    settings = _settings(fhir_server_allowlist=[http_base], allow_insecure_fhir_server=True)
    assert _grading(_post(_request(fhir_server=http_base), settings))["grade"] == 1
    assert ehr.fake.requests and all(r.url.scheme == "http" for r in ehr.fake.requests)


@pytest.mark.parametrize(
    ("allowed", "called"),
    [
        pytest.param(f"{BASE}/", BASE, id="allow-list-entry-with-slash"),
        pytest.param(BASE, f"{BASE}/", id="fhirServer-with-slash"),
        pytest.param(f"{BASE}/", f"{BASE}/", id="both-with-slash"),
    ],
)
def test_trailing_slash_matches_the_allow_list(ehr: Ehr, allowed: str, called: str) -> None:
    _install(ehr)
    assert _grading(_post(_request(fhir_server=called), _settings(fhir_server_allowlist=[allowed])))["grade"] == 1
    assert ehr.fake.requests
    assert all("//" not in r.url.path for r in ehr.fake.requests)


def test_token_is_sent_as_bearer_to_the_fhir_server(ehr: Ehr, caplog: pytest.LogCaptureFixture) -> None:
    _install(ehr)
    assert _grading(_post(_request()))["grade"] == 1
    kinds = {r.url.path.removeprefix("/fhir/").split("/")[0] for r in ehr.fake.requests}
    assert kinds == {
        "Patient",
        "Observation",
        "MedicationAdministration",
        "Procedure",
        "Condition",
        "QuestionnaireResponse",  # ICANS: the ICE form
    }
    assert len(ehr.fake.requests) == QUERIES  # one per prefetch key, all unpaged
    assert {r.headers.get("Authorization") for r in ehr.fake.requests} == {f"Bearer {TOKEN}"}
    # The log check is not vacuous: the fetch cycle itself was captured.
    assert any(record.name == "httpx" and "ehr.example.org" in record.getMessage() for record in caplog.records)


def test_no_authorization_header_without_fhir_authorization(ehr: Ehr) -> None:
    _install(ehr)
    assert _grading(_post(_request(token=None)))["grade"] == 1
    assert ehr.fake.requests
    assert all("Authorization" not in r.headers for r in ehr.fake.requests)


def test_queries_run_concurrently(ehr: Ehr) -> None:
    """All six queries are in flight together: the hook call costs one round trip, not six."""
    in_flight = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.1)
        in_flight -= 1
        return ehr.fake.handle(request)

    ehr.router.route(host="ehr.example.org").mock(side_effect=slow)
    assert _grading(_post(_request()))["grade"] == 1
    assert peak == QUERIES


# -- prefetch semantics ---------------------------------------------------------------------------


def test_null_prefetch_keys_are_not_queried(ehr: Ehr) -> None:
    _install(ehr)
    assert _grading(_post(_request(prefetch={"procedures": None, "conditions": None})))["grade"] == 1
    assert not ehr.fake.of_type("Procedure")
    assert not ehr.fake.of_type("Condition")
    assert ehr.fake.of_type("Patient") and ehr.fake.of_type("MedicationAdministration")


def test_operation_outcome_in_prefetch_is_fetched_again(ehr: Ehr) -> None:
    _install(ehr)
    prefetch = prefetch_from_bundle(_bundle("V02"))
    prefetch["medicationAdministrations"] = _outcome("timeout", "MAR service timed out")
    result = _grading(_post(_request(prefetch=prefetch)))
    assert result["grade"] == 1
    assert "missing" not in result
    assert [r.url.path for r in ehr.fake.requests] == ["/fhir/MedicationAdministration"]


@pytest.mark.parametrize(
    ("key", "source"),
    [
        ("patient", "Patient"),
        ("observations", "Observation"),
        ("oxygenDevices", "Observation"),
        ("vitalSigns", "Observation"),
    ],
)
def test_required_key_with_operation_outcome_and_no_fhir_server_is_412(ehr: Ehr, key: str, source: str) -> None:
    """The client could not supply required data and gave no server to ask: 412, not a guess."""
    _install(ehr)
    prefetch = prefetch_from_bundle(_bundle("V02"))
    prefetch[key] = _outcome("timeout", "flowsheet service down")
    response = _post(_request(prefetch=prefetch, fhir_server=None, token=None))
    assert response.status_code == 412
    assert _reason(response) == f"{source} data could not be obtained: prefetch '{key}': flowsheet service down"
    assert ehr.router.calls.call_count == 0


def test_complete_prefetch_sends_nothing(ehr: Ehr) -> None:
    _install(ehr)
    assert _grading(_post(_request(prefetch=prefetch_from_bundle(_bundle("V02")))))["grade"] == 1
    assert ehr.router.calls.call_count == 0


def test_absent_keys_without_fhir_server_is_412(ehr: Ehr) -> None:
    _install(ehr)
    response = _post(_request(fhir_server=None, token=None))
    assert response.status_code == 412
    assert "no fhirServer" in _reason(response)
    assert ehr.router.calls.call_count == 0


def test_paginated_search_gathers_every_page(ehr: Ehr) -> None:
    ehr.fake.resources = _resources("V01")
    ehr.fake.page_size = 3
    _install(ehr)
    result = _grading(_post(_request("v01")))
    assert result["grade"] == EXPECTED["V01"]["astct_crs_grade"]
    code_search = [  # the vital-sign code search (not the ICANS or lab code searches)
        r
        for r in ehr.fake.of_type("Observation")
        if "code" in r.url.params and "icans" not in r.url.params["code"] and "1988-5" not in r.url.params["code"]
    ]
    assert [r.url.params.get("_offset") for r in code_search] == [None, "3"]
    evidence = {e["reference"] for e in result["evidence"]}
    assert evidence & {"Observation/v01-obs-4", "Observation/v01-obs-5"}, "page 2 data must reach the grade"
    assert {r.headers.get("Authorization") for r in code_search} == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    "patient_id",
    ["v02/../Observation", "v02?_count=1000", "v02&code=x", "v 02", "v02#", "", "x" * 65, "Patient/v02"],
    ids=["path-traversal", "query", "param-injection", "space", "fragment", "empty", "too-long", "reference"],
)
def test_bad_context_patient_id_is_422_before_any_request(ehr: Ehr, patient_id: str) -> None:
    _install(ehr)
    response = _post(_request(patient_id))
    assert response.status_code == 422
    assert "patientId" in _reason(response)
    assert ehr.router.calls.call_count == 0


# -- crs-cds grade --fhir-server -------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CRS_CDS_* from the developer's shell reaches the CLI's Settings()."""
    for name in list(os.environ):
        if name.startswith("CRS_CDS_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["grade", "--fhir-server", BASE, "--at", AT, "--json", *args])
    out, err = capsys.readouterr()
    assert TOKEN not in out and TOKEN not in err
    return code, out, err


@pytest.mark.parametrize("via", ["env", "flag"])
def test_cli_grades_from_fhir_server_with_bearer_token(
    ehr: Ehr, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], via: str
) -> None:
    _install(ehr)
    if via == "env":
        clean_env.setenv(TOKEN_ENV, TOKEN)
    code, out, err = _cli(["--patient", PATIENT] + (["--token", TOKEN] if via == "flag" else []), capsys)
    assert code == 0, err
    (result,) = json.loads(out)["grading"]
    assert result["grade"] == 1
    assert len(ehr.fake.requests) == QUERIES - 2  # the CLI grades CRS only (no ICANS keys)
    assert {r.headers.get("Authorization") for r in ehr.fake.requests} == {f"Bearer {TOKEN}"}


def test_cli_without_token_sends_no_authorization(
    ehr: Ehr, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(ehr)
    code, _, err = _cli(["--patient", PATIENT], capsys)
    assert code == 0, err
    assert all("Authorization" not in r.headers for r in ehr.fake.requests)


def test_cli_timeline_from_fhir_server(
    ehr: Ehr, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--timeline`` prints the CRS course from the same fetched data the grade uses."""
    _install(ehr)
    code, out, err = _cli(["--patient", PATIENT, "--token", TOKEN, "--timeline"], capsys)
    assert code == 0, err
    document = json.loads(out)
    assert (document["patient"], document["at"]) == (f"Patient/{PATIENT}", AT)
    course = document["course"]
    assert course["grades"][-1]["time"] == AT
    assert course["grades"][-1]["grade"] == 1
    assert course["temperatures"] and all(t["reference"].startswith("Observation/") for t in course["temperatures"])


def test_cli_medication_fault_is_named_not_hidden(
    ehr: Ehr, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ehr.fail("MedicationAdministration", FAULTS["http-500"].effect)
    _install(ehr)
    code, out, err = _cli(["--patient", PATIENT, "--token", TOKEN], capsys)
    assert code == 0, err
    (result,) = json.loads(out)["grading"]
    assert result["grade"] is None
    assert result["gradeAtLeast"] == 1
    assert any(m.startswith("MedicationAdministration data unavailable") for m in result["missing"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--patient", PATIENT, "--fhir-server", "http://ehr.example.org/fhir"],
            (EXIT_UNAVAILABLE, "https"),
            id="http-without-insecure-flag",
        ),
        pytest.param(["--patient", "v02/../x"], (EXIT_USAGE, "FHIR id"), id="bad-patient-id"),
        pytest.param([], (EXIT_USAGE, "--patient"), id="no-patient"),
        pytest.param(["--patient", PATIENT, "some-file.json"], (EXIT_USAGE, "not both"), id="file-and-server"),
    ],
)
def test_cli_refuses_before_sending_anything(
    ehr: Ehr,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: tuple[int, str],
) -> None:
    code, message = expected
    _install(ehr)
    clean_env.setenv(TOKEN_ENV, TOKEN)
    got, _, err = _cli(args, capsys)
    assert got == code
    assert message in err
    assert ehr.router.calls.call_count == 0


def test_cli_observation_fault_exits_unavailable(
    ehr: Ehr, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ehr.fail("Observation", FAULTS["http-401"].effect)
    _install(ehr)
    clean_env.setenv(TOKEN_ENV, TOKEN)
    code, out, err = _cli(["--patient", PATIENT], capsys)
    assert code == EXIT_UNAVAILABLE
    assert out == ""
    assert "Observation data could not be obtained" in err and "401" in err


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """The service's own log set-up (``crs-cds serve``) at DEBUG, written to a buffer; undone after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = [*logging.root.manager.loggerDict, *LIBRARY_LOGGERS]
    levels = {name: logging.getLogger(name).level for name in names}
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


PATIENT_ID_SHAPES = [f"Patient/{PATIENT}", f"patient={PATIENT}", f"Patient%2F{PATIENT}", PATIENT]


def test_no_patient_id_or_token_in_any_log_line_even_at_debug(
    ehr: Ehr, service_log: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 12: httpx logged every FHIR URL (``Patient/<id>``, ``?patient=<id>``) at INFO."""
    for name in [*logging.root.manager.loggerDict, *LIBRARY_LOGGERS]:
        logging.getLogger(name).setLevel(logging.DEBUG)  # every logger, libraries included
    _install(ehr)
    assert _grading(_post(_request()))["grade"] == 1
    assert any(f"patient={PATIENT}" in str(r.url) for r in ehr.fake.requests), "the id was on the wire"
    lines = service_log.getvalue()
    assert '"logger":"httpx"' in lines, "the FHIR requests' library lines were emitted (and redacted)"
    for shape in PATIENT_ID_SHAPES:
        assert shape not in lines, f"{shape!r} in the service's log"
    assert TOKEN not in lines
    library_records = [r for r in caplog.records if r.name in LIBRARY_LOGGERS]
    assert library_records
    for record in library_records:
        assert PATIENT not in record.getMessage(), f"{record.name}: {record.getMessage()}"


def test_library_request_lines_are_quiet_at_the_default_level(ehr: Ehr) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info", stream=stream)
        _install(ehr)
        assert _grading(_post(_request()))["grade"] == 1
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = stream.getvalue()
    assert '"logger":"httpx"' not in lines and "HTTP Request" not in lines
    assert '"message":"hook answered"' in lines


# -- fhirAuthorization.scope: SMART v1 and v2 (CDS Hooks 3.0) -------------------------------------


def _with_scope(scope: str) -> dict[str, Any]:
    body = _request()
    body["fhirAuthorization"]["scope"] = scope
    return body


SCOPES_GRANTING_READS = [
    pytest.param("patient/*.read", id="v1-patient-wildcard-read"),
    pytest.param(
        "patient/Patient.read patient/Observation.read patient/MedicationAdministration.read", id="v1-per-type"
    ),
    pytest.param("patient/*.rs", id="v2-patient-wildcard-rs"),
    pytest.param("patient/Patient.rs patient/Observation.rs patient/MedicationAdministration.rs", id="v2-per-type-rs"),
    pytest.param("patient/*.cruds", id="v2-cruds"),
    pytest.param("user/*.r user/*.s", id="v2-user-r-and-s-apart"),
    pytest.param("patient/Observation.rs?category=vital-signs patient/*.rs", id="v2-narrowed-observation"),
    pytest.param("launch openid fhirUser", id="no-resource-scope-still-sent"),
]


@pytest.mark.parametrize("scope", SCOPES_GRANTING_READS)
def test_any_scope_form_is_accepted_and_the_token_forwarded(ehr: Ehr, scope: str) -> None:
    """The service never refuses a call for its scope (the FHIR server decides): same grade."""
    _install(ehr)
    result = _grading(_post(_with_scope(scope)))
    assert result["grade"] == EXPECTED["V02"]["astct_crs_grade"]
    assert ehr.fake.requests
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in ehr.fake.requests)


@pytest.mark.parametrize(
    ("scope", "named"),
    [
        pytest.param("patient/Patient.rs", "grants no search of Observation", id="v2-no-observation->named"),
        pytest.param("patient/Observation.r", "grants no search of Observation", id="v2-read-only-no-search->named"),
        pytest.param("patient/Observation.write", "grants no search of Observation", id="v1-write-only->named"),
        pytest.param("launch openid", "grants no search of Observation", id="no-resource-scope->named"),
        pytest.param("patient/Observation.rs", None, id="v2-rs-granted->server-refusal-only"),
        pytest.param("patient/Observation.s", None, id="v2-s-granted->server-refusal-only"),
        pytest.param("patient/Observation.read", None, id="v1-read-granted->server-refusal-only"),
        pytest.param("system/*.cruds", None, id="v2-system-wildcard->server-refusal-only"),
    ],
)
def test_refused_observation_names_the_grant_the_scope_lacks(ehr: Ehr, scope: str, named: str | None) -> None:
    ehr.fail("Observation", _status(403))
    _install(ehr)
    response = _post(_with_scope(scope))
    assert response.status_code == 412
    reason = _reason(response)
    assert "refused by the FHIR server (403)" in reason
    if named is None:
        assert "grants no" not in reason
    else:
        assert named in reason
