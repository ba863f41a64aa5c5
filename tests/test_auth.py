"""Only known EHRs get answers: each attack on the CDS client JWT is a test that gets a bare 401,
and a correctly signed token (ES384, RS384) gets through. Keys are generated per run; the issuer's
JWKS endpoint is mocked with respx."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from cds_hooks.errors import ConfigurationError
from cds_hooks.settings import Settings
from cds_hooks.web.app import create_app
from cds_hooks.web.auth import JwksCache, Unauthorized
from cds_hooks.web.routes import cds_services, course, feedback
from cds_hooks.web.security import authenticate
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from hook_requests import patient_view, prefetch_from_bundle
from vignette_data import vignette_bundle

ISSUER = "https://ehr.example.org"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
OTHER_JKU = "https://attacker.example.net/jwks.json"
ALLOWED_JKU = "https://keys.ehr.example.org/jwks.json"
PUBLIC = "https://cds.example.org"
SERVICE_PATH = "/cds-services/crs-grade"

EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ROGUE_KEY = ec.generate_private_key(ec.SECP384R1())


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    data: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    data.update({"kid": kid, "alg": alg, "use": "sig"})
    return data


JWKS = {"keys": [_jwk(EC_KEY, "ec-1", "ES384"), _jwk(RSA_KEY, "rsa-1", "RS384")]}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": PUBLIC + SERVICE_PATH,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], *, key: Any = EC_KEY, alg: str = "ES384", kid: str = "ec-1", **header: Any) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **header})


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "trusted_issuers": {ISSUER: {"jwks_url": JWKS_URL, "jku_allowlist": [ALLOWED_JKU]}},
        "public_base_url": PUBLIC,
        "allow_unauthenticated": False,
        "database_url": f"sqlite:///{tmp_path / 'store.sqlite3'}",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def jwks() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.get(JWKS_URL).mock(return_value=httpx.Response(200, json=JWKS))
        router.get(ALLOWED_JKU).mock(return_value=httpx.Response(200, json=JWKS))
        router.get(OTHER_JKU).mock(return_value=httpx.Response(200, json={"keys": [_jwk(ROGUE_KEY, "ec-1", "ES384")]}))
        yield router


@pytest.fixture
def client(tmp_path: Path, jwks: respx.MockRouter) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tmp_path))) as test_client:
        yield test_client


def _hook_body() -> dict[str, Any]:
    bundle = vignette_bundle("V01")
    return patient_view("v01", prefetch=prefetch_from_bundle(bundle), at="2025-03-04T08:00:00Z")


def _call(client: TestClient, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    response: httpx.Response = client.post(SERVICE_PATH, json=_hook_body(), headers=headers)
    return response


def test_es384_token_is_accepted(client: TestClient) -> None:
    response = _call(client, sign(claims()))
    assert response.status_code == 200
    assert response.json()["cards"][0]["summary"].startswith("CRS grade 3")


def test_rs384_token_is_accepted(client: TestClient) -> None:
    assert _call(client, sign(claims(), key=RSA_KEY, alg="RS384", kid="rsa-1")).status_code == 200


def test_audience_as_array_is_accepted(client: TestClient) -> None:
    assert _call(client, sign(claims(aud=["https://other", PUBLIC + SERVICE_PATH]))).status_code == 200


def test_allow_listed_jku_is_used(client: TestClient, jwks: respx.MockRouter) -> None:
    assert _call(client, sign(claims(), jku=ALLOWED_JKU)).status_code == 200
    assert jwks.routes[1].called


def _alg_none_token() -> str:
    header = {"alg": "none", "typ": "JWT", "kid": "ec-1"}
    encode = jwt.utils.base64url_encode
    return (encode(json.dumps(header).encode()) + b"." + encode(json.dumps(claims()).encode()) + b".").decode()


def _hs256_with_public_key() -> str:
    pem = EC_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": "ec-1"}
    signing = jwt.api_jws.PyJWS()
    signing._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    return signing.encode(json.dumps(claims()).encode(), pem, algorithm="HS256", headers=header)


def _forged(header: dict[str, Any], signature: bytes = b"\x01" * 96, payload: object = None) -> str:
    """A token with any header and signature bytes: what an attacker can send without a key."""
    encode = jwt.utils.base64url_encode
    body = claims() if payload is None else payload
    parts = (encode(json.dumps(header).encode()), encode(json.dumps(body).encode()), encode(signature))
    return b".".join(parts).decode()


ATTACKS: list[Any] = [
    pytest.param(lambda: None, id="no-token"),
    pytest.param(lambda: "not-a-jwt", id="garbage-token"),
    pytest.param(_alg_none_token, id="alg-none"),
    pytest.param(_hs256_with_public_key, id="hs256-signed-with-public-key"),
    pytest.param(lambda: sign(claims(aud=PUBLIC + "/cds-services/other")), id="wrong-aud"),
    pytest.param(lambda: sign(claims(aud="https://evil.example.net" + SERVICE_PATH)), id="aud-of-another-host"),
    pytest.param(lambda: sign(claims(exp=int(time.time()) - 600, iat=int(time.time()) - 900)), id="expired"),
    pytest.param(lambda: sign(claims(iat=int(time.time()) - 3600, exp=int(time.time()) + 300)), id="iat-too-old"),
    pytest.param(lambda: sign(claims(jti=None)), id="no-jti"),
    pytest.param(lambda: sign(claims(), kid="unknown-kid"), id="unknown-kid"),
    pytest.param(lambda: sign(claims(iss="https://untrusted.example.net")), id="untrusted-iss"),
    pytest.param(lambda: sign(claims(), key=ROGUE_KEY), id="signed-by-another-key"),
    pytest.param(lambda: sign(claims(), key=ROGUE_KEY, jku=OTHER_JKU), id="jku-not-allowed"),
    pytest.param(lambda: sign(claims(), key=RSA_KEY, alg="RS384", kid="ec-1"), id="kid-of-another-key-type"),
    pytest.param(lambda: _forged({"alg": "ES256", "typ": "JWT", "kid": "ec-1"}), id="es256-header-on-the-es384-key"),
    pytest.param(
        lambda: _forged({"alg": "ES512", "typ": "JWT", "kid": "ec-1"}, b"\x02" * 132),
        id="es512-header-on-the-es384-key",
    ),
    pytest.param(
        lambda: _forged({"alg": "ES384", "typ": "JWT", "kid": "ec-1"}, b"\x03" * 7),
        id="es384-signature-of-wrong-length",
    ),
    pytest.param(
        lambda: _forged({"alg": "PS384", "typ": "JWT", "kid": "rsa-1"}, b"\x04" * 256),
        id="ps384-header-on-the-rs384-key",
    ),
    pytest.param(
        lambda: _forged({"alg": "ES384", "typ": "JWT", "kid": "ec-1"}, payload=["not", "an", "object"]),
        id="payload-not-an-object",
    ),
    pytest.param(
        lambda: _forged({"alg": "ES384", "typ": "JWT", "kid": "ec-1", "crit": ["unknown-ext"]}),
        id="unknown-critical-header",
    ),
    pytest.param(
        lambda: _forged({"alg": "ES384", "typ": "JWT", "kid": "ec-1", "jku": ["a", "b"]}), id="jku-not-a-string"
    ),
    pytest.param(lambda: _forged({"alg": ["ES384"], "typ": "JWT", "kid": "ec-1"}), id="alg-not-a-string"),
    pytest.param(lambda: _forged({"alg": "ES384", "typ": {"x": 1}, "kid": "ec-1"}), id="typ-not-a-string"),
    pytest.param(
        lambda: _forged({"alg": "ES384", "typ": "JWT", "kid": "ec-1"}, payload={"iss": ["a"], "exp": "soon"}),
        id="claims-of-wrong-types",
    ),
]


@pytest.mark.parametrize("make_token", ATTACKS)
def test_attacks_get_a_bare_401(
    client: TestClient, jwks: respx.MockRouter, make_token: Callable[[], str | None]
) -> None:
    response = _call(client, make_token())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["issue"][0]["diagnostics"] == "unauthorized"
    assert not jwks.routes[2].called, "a JWKS was fetched from a URL that is not allowed"


def test_replayed_jti_is_401(client: TestClient) -> None:
    token = sign(claims())
    assert _call(client, token).status_code == 200
    assert _call(client, token).status_code == 401


def test_tenant_must_be_on_the_issuers_list(tmp_path: Path, jwks: respx.MockRouter) -> None:
    issuers = {ISSUER: {"jwks_url": JWKS_URL, "tenants": ["hospital-a"]}}
    with TestClient(create_app(_settings(tmp_path, trusted_issuers=issuers))) as client:
        assert _call(client, sign(claims(tenant="hospital-a"))).status_code == 200
        assert _call(client, sign(claims(tenant="hospital-b"))).status_code == 401
        assert _call(client, sign(claims())).status_code == 401


def test_jwks_endpoint_down_is_401_not_500(tmp_path: Path) -> None:
    with respx.mock() as router:
        router.get(JWKS_URL).mock(side_effect=httpx.ConnectError("down"))
        with TestClient(create_app(_settings(tmp_path))) as client:
            assert _call(client, sign(claims())).status_code == 401


def test_jwks_file_issuer(tmp_path: Path) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(JWKS))
    with TestClient(create_app(_settings(tmp_path, trusted_issuers={ISSUER: {"jwks_file": str(keys)}}))) as client:
        assert _call(client, sign(claims())).status_code == 200


def test_discovery_and_feedback_need_a_token_too(client: TestClient) -> None:
    assert client.get("/cds-services").status_code == 401
    token = sign(claims(aud=PUBLIC + "/cds-services"))
    assert client.get("/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    feedback = {
        "feedback": [
            {
                "card": "x",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "s"}],
                "outcomeTimestamp": "2025-03-04T08:05:00Z",
            }
        ]
    }
    assert client.post(SERVICE_PATH + "/feedback", json=feedback).status_code == 401
    token = sign(claims(aud=PUBLIC + SERVICE_PATH + "/feedback"))
    response = client.post(SERVICE_PATH + "/feedback", json=feedback, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"trusted_issuers": {}}, "no trusted CDS client issuer", id="no-issuer-no-dev-flag"),
        pytest.param({"public_base_url": None}, "PUBLIC_BASE_URL", id="issuers-without-public-url"),
        pytest.param(
            {"trusted_issuers": {ISSUER: {"jwks_url": "http://ehr.example.org/jwks"}}}, "https", id="jwks-over-http"
        ),
    ],
)
def test_unsafe_configuration_refuses_to_start(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_app(_settings(tmp_path, **overrides))


def test_public_url_must_be_https_or_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="https"):
        _settings(tmp_path, public_base_url="http://cds.example.org")
    assert _settings(tmp_path, public_base_url="http://127.0.0.1:8080").public_base_url == "http://127.0.0.1:8080"


def test_no_jwt_or_access_token_in_any_log_record(
    tmp_path: Path, jwks: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """A full cycle (discovery, hook with fhirAuthorization, failed call, feedback) logs neither."""
    access_token = "fhir-access-" + uuid.uuid4().hex
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(_settings(tmp_path))) as client:
        token = sign(claims())
        body = _hook_body()
        body["fhirAuthorization"] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "crs-cds",
        }
        response = client.post(SERVICE_PATH, json=body, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert client.post(SERVICE_PATH, json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records, "the cycle should have logged something"
    assert token not in text and token.split(".")[1] not in text
    assert access_token not in text
    assert "v01" not in text, "patient ids are logged only as a hash"


def test_cors_preflight_for_authorization_and_content_type(tmp_path: Path, jwks: respx.MockRouter) -> None:
    settings = _settings(tmp_path, cors_origins=["https://sandbox.cds-hooks.org"])
    with TestClient(create_app(settings)) as client:
        allowed = client.options(
            SERVICE_PATH,
            headers={
                "Origin": "https://sandbox.cds-hooks.org",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        refused = client.options(
            SERVICE_PATH, headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://sandbox.cds-hooks.org"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-origin" not in refused.headers


def test_no_cors_by_default(client: TestClient) -> None:
    response = client.options(
        SERVICE_PATH, headers={"Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_failing_jwks_url_is_not_fetched_on_every_request(tmp_path: Path) -> None:
    """Issue 12: while the issuer's JWKS fails, each request answered 401 after fetching it again."""
    with respx.mock() as router:
        route = router.get(JWKS_URL).mock(side_effect=httpx.ConnectError("down"))
        with TestClient(create_app(_settings(tmp_path))) as client:
            statuses = [_call(client, sign(claims())).status_code for _ in range(5)]
    assert statuses == [401] * 5
    assert route.call_count == 1, "the backoff (1 s first) holds later requests off the failing URL"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Seconds after the first failure -> fetches made so far (backoff 1, 2, 4, 8 ... s).
BACKOFF: list[Any] = [
    pytest.param([0.0, 0.5, 0.99], 1, id="within-first-second->no-refetch"),
    pytest.param([0.0, 1.0], 2, id="after-1s->one-retry"),
    pytest.param([0.0, 1.0, 2.5], 2, id="second-retry-waits-2s"),
    pytest.param([0.0, 1.0, 3.0], 3, id="after-1s+2s->second-retry"),
    pytest.param([0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 123.0], 8, id="doubling-up-to-the-cap"),
    pytest.param([0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 122.0], 7, id="capped-at-60s"),
]


@pytest.mark.parametrize(("times", "fetches"), BACKOFF)
def test_jwks_backoff_schedule(times: list[float], fetches: int) -> None:
    clock = _Clock()
    start = clock.now

    async def run() -> int:
        with respx.mock() as router:
            route = router.get(JWKS_URL).mock(side_effect=httpx.ConnectError("down"))
            async with httpx.AsyncClient() as http:
                cache = JwksCache(http, clock=clock)
                for offset in times:
                    clock.now = start + offset
                    with pytest.raises(Unauthorized):
                        await cache.key(JWKS_URL, "ec-1")
            return route.call_count

    assert asyncio.run(run()) == fetches


def test_jwks_recovers_after_the_backoff() -> None:
    clock = _Clock()

    async def run() -> tuple[str, int]:
        with respx.mock() as router:
            route = router.get(JWKS_URL).mock(
                side_effect=[httpx.ConnectError("down"), httpx.Response(200, json=JWKS), httpx.Response(500)]
            )
            async with httpx.AsyncClient() as http:
                cache = JwksCache(http, clock=clock)
                with pytest.raises(Unauthorized):
                    await cache.key(JWKS_URL, "ec-1")
                clock.now += 1.0
                key = await cache.key(JWKS_URL, "ec-1")
                clock.now += 0.1
                await cache.key(JWKS_URL, "ec-1")  # cached: no fetch
            return str(key.key_id), route.call_count

    assert asyncio.run(run()) == ("ec-1", 2)


@pytest.mark.parametrize(
    "router",
    [
        pytest.param(cds_services.router, id="discovery-and-hooks"),
        pytest.param(course.router, id="course"),
        pytest.param(feedback.router, id="feedback"),
    ],
)
def test_every_cds_router_requires_the_client_token(router: APIRouter) -> None:
    """Authentication is a router dependency: a CDS route added later cannot forget it."""
    assert router.routes
    assert all(isinstance(r, APIRoute) and r.path.startswith("/cds-services") for r in router.routes)
    assert authenticate in {dependency.dependency for dependency in router.dependencies}
