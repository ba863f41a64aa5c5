"""SMART App Launch (issue 8): the launch, the callback and the page, against real local servers.

Why real servers: state, PKCE and the token exchange only mean something when an authorization
server that checks them answers over sockets, and the page must rest on the same FHIR reads the
hook makes. The app runs in-process (TestClient, with its lifespan's shared HTTP client); the
authorization server + FHIR facade (``smart_auth_server``) and the sekmet FHIR server are real.
The browser's hop to ``/authorize`` is made with httpx; ``test_smart_e2e`` makes it with Chromium.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from cds_hooks.web.smart.sessions import COOKIE, SessionStore, SmartSession, pkce_pair
from fastapi.testclient import TestClient

from fhir_server import RunningFhirServer
from smart_auth_server import RunningAuthServer, s256

pytestmark = pytest.mark.integration

VIGNETTE = Path(__file__).resolve().parents[1] / "fixtures" / "vignettes" / "V31.bundle.json"
AT = "2025-03-04T08:00:00Z"
CLIENT_ID = "crs-course-test"
REDIRECT = "http://127.0.0.1:8999/smart/callback"
TRACKS = ("ASTCT grade", "Temperature", "Blood pressure", "Oxygen support", "Vasopressors", "Therapies")


@pytest.fixture(scope="module")
def auth(fhir_server: RunningFhirServer) -> Iterator[RunningAuthServer]:
    bundle = json.loads(VIGNETTE.read_text())
    fhir_server.load([entry["resource"] for entry in bundle["entry"]])
    server = RunningAuthServer(CLIENT_ID, fhir_server.base_url, patient="v31").start()
    server.state.redirect_uri = REDIRECT
    try:
        yield server
    finally:
        server.stop()


def _settings(auth: RunningAuthServer, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "allow_unauthenticated": True,
        "database_url": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "fhir_server_allowlist": [auth.iss],
        "allow_insecure_fhir_server": True,
        "fhir_request_timeout_seconds": 20,
        "hook_time_budget_seconds": 40,
        "smart_client_id": CLIENT_ID,
        "smart_redirect_url": REDIRECT,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def app_client(auth: RunningAuthServer, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(auth, tmp_path)), follow_redirects=False) as client:
        yield client


def _authorize(location: str) -> dict[str, str]:
    """The browser's hop: follow the app's redirect to /authorize, return the callback query."""
    response = httpx.get(location, follow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    back = urlsplit(response.headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(back.query).items()}


def _launch(client: TestClient, auth: RunningAuthServer, **params: str) -> httpx.Response:
    response: httpx.Response = client.get("/smart/launch", params={"iss": auth.iss, **params})
    return response


def test_ehr_launch_reaches_the_page_with_grade_and_tracks(app_client: TestClient, auth: RunningAuthServer) -> None:
    launched = _launch(app_client, auth, launch="ehr-launch-1", at=AT)
    assert launched.status_code == 302
    cookie = launched.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/smart" in cookie
    assert "Secure" not in cookie  # http loopback redirect URL only
    first_session = launched.cookies[COOKIE]
    query = parse_qs(urlsplit(launched.headers["location"]).query)
    assert query["response_type"] == ["code"] and query["client_id"] == [CLIENT_ID]
    assert query["aud"] == [auth.iss] and query["launch"] == ["ehr-launch-1"]
    assert query["code_challenge_method"] == ["S256"] and len(query["state"][0]) >= 43
    scopes = query["scope"][0].split()
    assert {"launch", "launch/patient", "openid", "fhirUser"} <= set(scopes)
    for resource in ("Patient", "Observation", "MedicationAdministration", "Procedure", "Condition"):
        assert f"patient/{resource}.rs" in scopes

    back = _authorize(launched.headers["location"])
    done = app_client.get("/smart/callback", params=back)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/smart/app?at=2025-03-04T08%3A00%3A00Z"
    assert done.cookies[COOKIE] != first_session  # a fresh id after sign-in
    token_form = auth.state.token_requests[-1]
    assert s256(token_form["code_verifier"]) == query["code_challenge"][0]

    page = app_client.get(done.headers["location"])
    assert page.status_code == 200, page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    text = page.text
    assert 'id="current-grade">Grade 2<' in text
    assert 'id="worst-grade">Grade 3<' in text
    for track in TRACKS:
        assert track in text
    assert "fever 38.0 °C" in text and "<script" not in text
    for token in auth.state.tokens:
        assert token not in text
    assert auth.state.fhir_requests, "the page must read through the FHIR facade with the token"

    course = app_client.get("/smart/course", params={"at": AT})
    assert course.status_code == 200
    assert course.json()["patient"] == "Patient/v31"
    assert course.json()["course"]["worstGrade"] == 3


def test_standalone_launch_asks_for_a_patient_not_an_ehr_context(
    app_client: TestClient, auth: RunningAuthServer
) -> None:
    launched = _launch(app_client, auth)
    assert launched.status_code == 302
    query = parse_qs(urlsplit(launched.headers["location"]).query)
    assert "launch" not in query
    scopes = query["scope"][0].split()
    assert "launch" not in scopes and "launch/patient" in scopes
    done = app_client.get("/smart/callback", params=_authorize(launched.headers["location"]))
    assert done.status_code == 303
    assert app_client.get("/smart/app", params={"at": AT}).status_code == 200


def test_wrong_state_is_refused_and_no_token_is_requested(app_client: TestClient, auth: RunningAuthServer) -> None:
    launched = _launch(app_client, auth, launch="x")
    back = _authorize(launched.headers["location"])
    before = len(auth.state.token_requests)
    wrong = ("B" if back["state"][0] == "A" else "A") + back["state"][1:]
    refused = app_client.get("/smart/callback", params={**back, "state": wrong})
    assert refused.status_code == 400
    assert "state does not match" in refused.text
    assert len(auth.state.token_requests) == before
    # Issue 12: no state change on a GET that failed the state check (any page can send one), so
    # the pending launch is kept and the real callback still completes, once.
    assert "set-cookie" not in refused.headers
    assert app_client.get("/smart/callback", params=back).status_code == 303
    again = app_client.get("/smart/callback", params=back)
    assert again.status_code == 400 and "No launch is pending" in again.text


def test_callback_without_the_launch_cookie_is_refused(app_client: TestClient, auth: RunningAuthServer) -> None:
    launched = _launch(app_client, auth, launch="x")
    back = _authorize(launched.headers["location"])
    app_client.cookies.clear()
    refused = app_client.get("/smart/callback", params=back)
    assert refused.status_code == 400 and "No launch is pending" in refused.text


def test_a_used_callback_cannot_be_replayed(app_client: TestClient, auth: RunningAuthServer) -> None:
    launched = _launch(app_client, auth, launch="x")
    back = _authorize(launched.headers["location"])
    pending = launched.cookies[COOKIE]
    assert app_client.get("/smart/callback", params=back).status_code == 303
    app_client.cookies.set(COOKIE, pending, path="/smart")
    assert app_client.get("/smart/callback", params=back).status_code == 400


def test_wrong_pkce_verifier_shows_the_token_error(app_client: TestClient, auth: RunningAuthServer) -> None:
    launched = _launch(app_client, auth, launch="x")
    back = _authorize(launched.headers["location"])
    auth.state.codes[back["code"]].challenge = s256(pkce_pair()[0])  # a challenge this verifier cannot meet
    refused = app_client.get("/smart/callback", params=back)
    assert refused.status_code == 502
    assert "Token request refused" in refused.text
    assert "invalid_grant: PKCE verification failed" in refused.text
    assert app_client.get("/smart/app").status_code == 401


def test_authorization_refusal_is_shown(app_client: TestClient, auth: RunningAuthServer) -> None:
    auth.state.authorize_error = "access_denied"
    try:
        launched = _launch(app_client, auth, launch="x")
        refused = app_client.get("/smart/callback", params=_authorize(launched.headers["location"]))
    finally:
        auth.state.authorize_error = None
    assert refused.status_code == 400
    assert "access_denied: The user declined." in refused.text


def test_token_without_patient_is_a_clear_error(app_client: TestClient, auth: RunningAuthServer) -> None:
    auth.state.patient = None
    try:
        launched = _launch(app_client, auth, launch="x")
        refused = app_client.get("/smart/callback", params=_authorize(launched.headers["location"]))
    finally:
        auth.state.patient = "v31"
    assert refused.status_code == 502
    assert "No patient selected" in refused.text


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.example/fhir",
        "http://127.0.0.1:1/fhir",
        "",
    ],
)
def test_launch_with_an_unlisted_iss_is_refused_before_any_call(
    app_client: TestClient, auth: RunningAuthServer, iss: str
) -> None:
    before = len(auth.state.authorize_requests)
    refused = app_client.get("/smart/launch", params={"iss": iss, "launch": "x"})
    assert refused.status_code == 400
    assert "Launch refused" in refused.text
    assert "set-cookie" not in refused.headers
    assert len(auth.state.authorize_requests) == before


def test_iss_on_the_fhir_allowlist_but_not_the_smart_list_is_refused(auth: RunningAuthServer, tmp_path: Path) -> None:
    settings = _settings(auth, tmp_path, smart_issuer_allowlist=["https://other.example/fhir"])
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert _launch(client, auth, launch="x").status_code == 400


def test_https_redirect_url_gives_a_secure_cookie(auth: RunningAuthServer, tmp_path: Path) -> None:
    settings = _settings(auth, tmp_path, smart_redirect_url="https://crs.example/smart/callback")
    with TestClient(create_app(settings), follow_redirects=False) as client:
        launched = _launch(client, auth, launch="x")
    assert launched.status_code == 302
    assert "Secure" in launched.headers["set-cookie"] and "HttpOnly" in launched.headers["set-cookie"]


def test_client_evaluation_time_is_refused_when_not_allowed(auth: RunningAuthServer, tmp_path: Path) -> None:
    settings = _settings(auth, tmp_path, allow_client_evaluation_time=False)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        refused = _launch(client, auth, launch="x", at=AT)
    assert refused.status_code == 400 and "current time only" in refused.text


def test_page_without_a_session_asks_to_launch(app_client: TestClient) -> None:
    response = app_client.get("/smart/app")
    assert response.status_code == 401 and "launch the app again" in response.text
    app_client.cookies.set(COOKIE, "forged-session-id", path="/smart")
    assert app_client.get("/smart/app").status_code == 401


def test_smart_routes_are_absent_unless_configured(auth: RunningAuthServer, tmp_path: Path) -> None:
    settings = _settings(auth, tmp_path, smart_client_id=None, smart_redirect_url=None)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert client.get("/smart/launch", params={"iss": auth.iss}).status_code == 404


def test_no_token_code_or_verifier_in_the_logs(
    app_client: TestClient, auth: RunningAuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    launched = _launch(app_client, auth, launch="x", at=AT)
    back = _authorize(launched.headers["location"])
    app_client.get("/smart/callback", params=back)
    assert app_client.get("/smart/app", params={"at": AT}).status_code == 200
    secrets_seen = [back["code"], back["state"], auth.state.token_requests[-1]["code_verifier"], *auth.state.tokens]
    # The test's own HTTP clients log the browser's URLs (with code and state); the app's must not.
    own = [r for r in caplog.records if r.name.startswith("crs_cds") or not _test_side(r.getMessage())]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in own)
    for secret in secrets_seen:
        assert secret not in logged


def _test_side(message: str) -> bool:
    return "http://testserver" in message or "/authorize?" in message or "/smart/callback?" in message


def test_session_store_expires_and_bounds_sessions() -> None:
    now = [0.0]
    store = SessionStore(limit=2, clock=lambda: now[0])
    first = store.create(SmartSession(iss="https://f/fhir", expires=10))
    second = store.create(SmartSession(iss="https://f/fhir", expires=10))
    third = store.create(SmartSession(iss="https://f/fhir", expires=10))
    assert len(store) == 2 and store.get(first) is None  # the oldest was dropped
    now[0] = 11
    assert store.get(second) is None and store.get(third) is None


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and s256(verifier) == challenge


def _sign_in(client: TestClient, auth: RunningAuthServer) -> None:
    launched = _launch(client, auth, launch="x", at=AT)
    done = client.get("/smart/callback", params=_authorize(launched.headers["location"]))
    assert done.status_code == 303, done.text


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no-parameters"),
        pytest.param({"state": "forged", "code": "forged"}, id="wrong-state-and-code"),
        pytest.param({"error": "access_denied"}, id="error-without-state"),
    ],
)
def test_stray_callback_keeps_the_signed_in_session(
    app_client: TestClient, auth: RunningAuthServer, params: dict[str, str]
) -> None:
    """Issue 12: a GET any page can trigger must not sign the clinician out."""
    _sign_in(app_client, auth)
    stray = app_client.get("/smart/callback", params=params)
    assert stray.status_code == 400
    assert "set-cookie" not in stray.headers
    assert app_client.get("/smart/app", params={"at": AT}).status_code == 200


def test_launch_flood_does_not_evict_signed_in_sessions(
    auth: RunningAuthServer, tmp_path: Path, app_client: TestClient
) -> None:
    """Issue 12: unauthenticated launches may evict only other pending launches."""
    app_client.app.state.smart.sessions = SessionStore(limit=100, pending_limit=10)  # type: ignore[attr-defined]
    _sign_in(app_client, auth)
    attacker = TestClient(app_client.app, follow_redirects=False)  # no cookies; shares the running app
    for _ in range(30):
        assert _launch(attacker, auth).status_code == 302
    assert app_client.app.state.smart.sessions.counts() == (10, 1)  # type: ignore[attr-defined]
    assert app_client.get("/smart/app", params={"at": AT}).status_code == 200


def test_ten_thousand_pending_launches_leave_signed_in_sessions_alone() -> None:
    store = SessionStore()
    signed_in = store.create(
        SmartSession(iss="https://f/fhir", expires=store.now() + 600, access_token="t", patient="p")
    )
    for _ in range(10_000):
        store.create(SmartSession(iss="https://f/fhir", expires=store.now() + 600, state="s", verifier="v"))
    store.create(SmartSession(iss="https://f/fhir", expires=store.now() + 600, state="s", verifier="v"))
    assert store.get(signed_in) is not None
    assert store.counts() == (10_000, 1)


def test_smart_configuration_is_read_once_for_many_launches(auth: RunningAuthServer, tmp_path: Path) -> None:
    """Issue 12: each unauthenticated launch made an outbound request to the issuer."""
    with TestClient(create_app(_settings(auth, tmp_path)), follow_redirects=False) as client:
        before = auth.state.configuration_requests
        for _ in range(5):
            assert _launch(client, auth, launch="x").status_code == 302
    assert auth.state.configuration_requests - before == 1


EXTREME_TIMES = [
    pytest.param("0001-01-01T00:30:00+01:00", id="year-0-in-utc"),
    pytest.param("9999-12-31T23:30:00-01:00", id="year-10000-in-utc"),
]


@pytest.mark.parametrize("at", EXTREME_TIMES)
def test_extreme_evaluation_time_is_refused_on_every_smart_page(
    app_client: TestClient, auth: RunningAuthServer, at: str
) -> None:
    """Issue 12: an evaluation time near year 1 or 9999 gave a 500; it is refused with a reason."""
    refused = _launch(app_client, auth, launch="x", at=at)
    assert refused.status_code == 400 and "Evaluation time refused" in refused.text
    _sign_in(app_client, auth)
    page = app_client.get("/smart/app", params={"at": at})
    assert page.status_code == 400 and "Evaluation time refused" in page.text
    course = app_client.get("/smart/course", params={"at": at})
    assert course.status_code == 400 and course.json()["error"] == "Evaluation time refused"


def test_extreme_charted_times_leave_the_smart_page_drawable(
    app_client: TestClient, auth: RunningAuthServer, fhir_server: RunningFhirServer
) -> None:
    """Issue 12: a chart with dateTimes outside what UTC can hold still gives the page."""
    text = VIGNETTE.read_text().replace("Patient/v31", "Patient/xdates").replace('"id": "v31"', '"id": "xdates"')
    resources = [entry["resource"] for entry in json.loads(text)["entry"]]
    for resource in resources:
        if resource["resourceType"] != "Patient":
            resource["id"] = f"xd-{resource['id']}"
    extremes = []
    for number, effective in enumerate(("0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00")):
        fever = next(r for r in resources if r["resourceType"] == "Observation" and "valueQuantity" in r)
        extreme = json.loads(json.dumps(fever))
        extreme["id"] = f"xd-extreme-{number}"
        extreme["effectiveDateTime"] = effective
        extremes.append(extreme)
    fhir_server.load([*resources, *extremes])
    auth.state.patient = "xdates"
    try:
        _sign_in(app_client, auth)
    finally:
        auth.state.patient = "v31"
    page = app_client.get("/smart/app", params={"at": AT})
    assert page.status_code == 200, page.text
    assert 'id="worst-grade">Grade 3<' in page.text, "the rest of the chart is graded as before"
    course = app_client.get("/smart/course", params={"at": AT})
    assert course.status_code == 200
    assert "xd-extreme" not in course.text
