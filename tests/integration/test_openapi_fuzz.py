"""Schemathesis against a real ``crs-cds serve`` process over its own ``/openapi.json`` (issue 13).

What an integrator's test tool would do: generate requests from the published schema (valid and
invalid bodies, odd service ids, huge strings) and send them to the running service. Whatever it
sends, the answer is never a 5xx. Run twice: without a token (everything must stop at a clean
401) and with a fresh CDS client JWT per request, minted here and trusted through a JWKS file, so
the generated bodies reach the routes. Bounded by example counts (no timing assertions).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jwt
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, given, settings
from jwt.algorithms import ECAlgorithm
from schemathesis import Case, GenerationMode

from service_process import RunningService

pytestmark = pytest.mark.integration

ISSUER = "https://ehr.example.org"
PUBLIC = "http://127.0.0.1"
KEY = ec.generate_private_key(ec.SECP384R1())
UNAUTHENTICATED_EXAMPLES = 8
AUTHENTICATED_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


def fuzz(examples: int) -> settings:
    """Bounded and repeatable: the same examples on every run, so a failure reproduces."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )


def token(path: str) -> str:
    """A CDS client JWT for one request (``aud`` is the endpoint; a fresh ``jti`` every time)."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": PUBLIC + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, KEY, algorithm="ES384", headers={"kid": "ec-1"})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    keys: Path = tmp_path_factory.mktemp("keys") / "jwks.json"
    public = ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    keys.write_text(json.dumps({"keys": [{**public, "kid": "ec-1", "alg": "ES384", "use": "sig"}]}))
    env = {
        "CRS_CDS_TRUSTED_ISSUERS": json.dumps({ISSUER: {"jwks_file": str(keys)}}),
        "CRS_CDS_PUBLIC_BASE_URL": PUBLIC,
        "CRS_CDS_MAX_BODY_BYTES": "200000",
    }
    with RunningService(env) as running:
        yield running


@pytest.fixture(scope="module")
def published(service: RunningService) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{service.base_url}/openapi.json")


OPERATIONS = [
    pytest.param("GET", "/cds-services", id="discovery"),
    pytest.param("POST", "/cds-services/{service_id}", id="service-call"),
    pytest.param("POST", "/cds-services/crs-grade/course", id="course"),
    pytest.param("POST", "/cds-services/{service_id}/feedback", id="feedback"),
]
# Each operation with bodies valid by the schema, and (where it has inputs) invalid ones.
AUTHENTICATED_RUNS = [
    pytest.param(
        op.values[0], op.values[1], mode, id=f"{op.id}-{'valid' if mode is GenerationMode.POSITIVE else 'invalid'}"
    )
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (op.id == "discovery" and mode is GenerationMode.NEGATIVE)  # no inputs to make invalid
]


def _no_server_error(case: Case[Any], status: int, body: str) -> None:
    assert status < 500, f"{case.method} {case.formatted_path} -> {status}: {body[:300]}"


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_fuzzed_without_a_token_is_401_never_5xx(
    service: RunningService, published: schemathesis.BaseSchema, method: str, path: str
) -> None:
    operation = published[path][method]

    @fuzz(UNAUTHENTICATED_EXAMPLES)
    @given(case=operation.as_strategy(GenerationMode.POSITIVE))
    def check(case: Case[Any]) -> None:
        response = case.call(base_url=service.base_url)
        _no_server_error(case, response.status_code, response.text)
        assert response.status_code == 401, response.text
        assert response.json()["resourceType"] == "OperationOutcome"

    check()


@pytest.mark.parametrize(("method", "path", "mode"), AUTHENTICATED_RUNS)
def test_fuzzed_with_a_valid_jwt_is_never_5xx(
    service: RunningService, published: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = published[path][method]

    @fuzz(AUTHENTICATED_EXAMPLES)
    @given(case=operation.as_strategy(mode))
    def check(case: Case[Any]) -> None:
        # The service checks ``aud`` against the decoded path it serves (Starlette's ``scope["path"]``).
        headers = {"Authorization": f"Bearer {token(unquote(case.formatted_path))}"}
        response = case.call(base_url=service.base_url, headers=headers)
        _no_server_error(case, response.status_code, response.text)
        assert response.status_code != 401, response.text  # the JWT is accepted: the body was reached

    check()
