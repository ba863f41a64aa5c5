"""Several replicas behind a real load balancer, sharing a real PostgreSQL (issue 12, item 5).

Started once for the module: PostgreSQL (Debian's, on a Unix socket), three ``crs-cds serve``
processes with CDS client authentication on, and HAProxy in front of them, health-checked on
``/readyz``. What a hospital's operator would check before trusting the deployment:
- a JWT replayed to another replica is refused (the replay check is shared);
- a SMART session started on one replica works on the others (sessions are shared, sealed);
- PostgreSQL restarted under load: cards keep being served, feedback answers 200 or 503 with
  ``Retry-After`` (never 500), and answers resume without restarting the service; the card
  records made during the outage are stored once it is back;
- one replica SIGKILLed under load: the others answer on, and nothing acknowledged is lost (a
  request in flight on it may fail: retried elsewhere, its JWT is a replay).
Load here is bounded: a fixed number of requests from a few threads, with a time limit.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from fhir_server import RunningFhirServer
from hook_requests import patient_view, prefetch_from_bundle
from load_balancer import RunningLoadBalancer
from pg_server import RunningPostgres
from service_process import RunningService
from smart_auth_server import RunningAuthServer
from vignette_data import vignette_bundle

pytestmark = pytest.mark.integration

ISSUER = "https://ehr.example.org"
PUBLIC = "http://127.0.0.1"
KEY = ec.generate_private_key(ec.SECP384R1())
SESSION_KEY = "Q2Wi4IHdp8C5XmHCFB1fU_GWHiXibORb22wFwYF9jNk="
CLIENT_ID = "crs-course-test"
REDIRECT = "http://127.0.0.1:8999/smart/callback"
AT = "2025-03-04T08:00:00Z"
VIGNETTE = Path(__file__).resolve().parents[1] / "fixtures" / "vignettes" / "V31.bundle.json"
REPLICAS = 3


def token(path: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": PUBLIC + path, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, KEY, algorithm="ES384", headers={"kid": "ec-1"})


def _auth(path: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(path)}"}


@dataclass
class Cluster:
    postgres: RunningPostgres
    replicas: list[RunningService]
    balancer: RunningLoadBalancer
    auth: RunningAuthServer

    def rows(self, table: str, column: str) -> set[str]:
        import psycopg

        with psycopg.connect(self.postgres.url) as conn:
            return {str(r[0]) for r in conn.execute(f"SELECT {column} FROM {table}").fetchall()}


@pytest.fixture(scope="module")
def cluster(fhir_server: RunningFhirServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    bundle = json.loads(VIGNETTE.read_text())
    fhir_server.load([entry["resource"] for entry in bundle["entry"]])
    keys = tmp_path_factory.mktemp("keys") / "jwks.json"
    public = ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    keys.write_text(json.dumps({"keys": [{**public, "kid": "ec-1", "alg": "ES384", "use": "sig"}]}))
    with RunningPostgres() as postgres:
        auth = RunningAuthServer(CLIENT_ID, fhir_server.base_url, patient="v31").start()
        auth.state.redirect_uri = REDIRECT
        env = {
            "CRS_CDS_DATABASE_URL": postgres.url,
            "CRS_CDS_SESSION_KEY": SESSION_KEY,
            "CRS_CDS_TRUSTED_ISSUERS": json.dumps({ISSUER: {"jwks_file": str(keys)}}),
            "CRS_CDS_PUBLIC_BASE_URL": PUBLIC,
            "CRS_CDS_FHIR_SERVER_ALLOWLIST": auth.iss,
            "CRS_CDS_ALLOW_INSECURE_FHIR_SERVER": "true",
            "CRS_CDS_SMART_CLIENT_ID": CLIENT_ID,
            "CRS_CDS_SMART_REDIRECT_URL": REDIRECT,
            # The SMART page reads the chart through the test's FHIR facade: generous on a busy CI machine.
            "CRS_CDS_FHIR_REQUEST_TIMEOUT_SECONDS": "20",
            "CRS_CDS_HOOK_TIME_BUDGET_SECONDS": "40",
        }
        replicas = [RunningService(env) for _ in range(REPLICAS)]
        try:
            for replica in replicas:
                replica.start()
            with RunningLoadBalancer([r.base_url for r in replicas]) as balancer:
                yield Cluster(postgres, replicas, balancer, auth)
        finally:
            for replica in replicas:
                replica.stop()
            auth.stop()


def _hook_body() -> dict[str, Any]:
    return patient_view("v01", prefetch=prefetch_from_bundle(vignette_bundle("V01")), at=AT)


def call_hook(base_url: str) -> httpx.Response:
    path = "/cds-services/crs-grade"
    return httpx.post(base_url + path, json=_hook_body(), headers=_auth(path), timeout=30)


def send_feedback(base_url: str, card: str) -> httpx.Response:
    path = "/cds-services/crs-grade/feedback"
    body = {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2025-03-04T08:05:00Z"}]}
    return httpx.post(base_url + path, json=body, headers=_auth(path), timeout=30)


def test_a_jwt_replayed_to_another_replica_is_refused(cluster: Cluster) -> None:
    path = "/cds-services/crs-grade"
    headers = _auth(path)
    first = httpx.post(cluster.replicas[0].base_url + path, json=_hook_body(), headers=headers, timeout=30)
    assert first.status_code == 200, first.text
    for other in cluster.replicas[1:]:
        replayed = httpx.post(other.base_url + path, json=_hook_body(), headers=headers, timeout=30)
        assert replayed.status_code == 401
        assert replayed.headers["www-authenticate"].startswith("Bearer")


def test_a_smart_session_works_on_every_replica(cluster: Cluster) -> None:
    one, two, three = (r.base_url for r in cluster.replicas)
    launched = httpx.get(f"{one}/smart/launch", params={"iss": cluster.auth.iss, "launch": "x", "at": AT})
    assert launched.status_code == 302, launched.text
    pending = launched.cookies["crs_smart_session"]
    authorized = httpx.get(launched.headers["location"], follow_redirects=False, timeout=10)
    back = {k: v[0] for k, v in parse_qs(urlsplit(authorized.headers["location"]).query).items()}
    done = httpx.get(f"{two}/smart/callback", params=back, cookies={"crs_smart_session": pending})
    assert done.status_code == 303, done.text  # the pending launch made on replica one was found
    signed_in = done.cookies["crs_smart_session"]
    page = httpx.get(f"{three}{done.headers['location']}", cookies={"crs_smart_session": signed_in})
    assert page.status_code == 200, page.text
    assert 'id="current-grade">Grade 2<' in page.text
    for access_token in cluster.auth.state.tokens:
        assert access_token not in page.text


@dataclass
class LoadResult:
    hook_statuses: list[int]
    feedback_statuses: list[int]
    cards: list[str]
    feedback_acknowledged: list[str]
    retry_after: list[str]


def run_load(base_url: str, requests: int, during: Callable[[], None], *, after: int) -> LoadResult:
    """``requests`` hook calls (each followed by feedback on its first card) from 4 threads;
    ``during`` runs once ``after`` calls have been answered. Bounded in count and time."""
    result = LoadResult([], [], [], [], [])
    answered = threading.Semaphore(0)
    lock = threading.Lock()

    def one(_: int) -> None:
        response = call_hook(base_url)
        with lock:
            result.hook_statuses.append(response.status_code)
        if response.status_code == 200:
            cards = [c["uuid"] for c in response.json()["cards"]]
            with lock:
                result.cards.extend(cards)
            fed = send_feedback(base_url, cards[0])
            with lock:
                result.feedback_statuses.append(fed.status_code)
                if fed.status_code == 200:
                    result.feedback_acknowledged.append(cards[0])
                if fed.status_code == 503:
                    result.retry_after.append(fed.headers.get("retry-after", ""))
        answered.release()

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(one, n) for n in range(requests)]
        for _ in range(after):
            assert answered.acquire(timeout=60)
        during()
        for future in futures:
            future.result(timeout=120)
    return result


def eventually(check: Callable[[], bool], *, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return check()


def _store_ok(replica: RunningService) -> bool:
    body = httpx.get(f"{replica.base_url}/readyz", timeout=5).json()
    return bool(body["store"]["status"] == "ok")


def test_postgres_restart_under_load(cluster: Cluster) -> None:
    def restart() -> None:
        cluster.postgres.pause()
        time.sleep(1.0)
        cluster.postgres.resume()

    result = run_load(cluster.balancer.base_url, 40, restart, after=10)
    assert set(result.hook_statuses) == {200}  # cards are served through the outage
    assert set(result.feedback_statuses) <= {200, 503}  # never a 500
    assert all(value.isdigit() for value in result.retry_after)
    # Answers resume without restarting the service.
    assert eventually(lambda: send_feedback(cluster.balancer.base_url, str(uuid.uuid4())).status_code == 200)
    # Card records of the outage were spooled and are stored once the store is back.
    assert eventually(lambda: set(result.cards) <= cluster.rows("issued_card", "card_uuid"))
    assert set(result.feedback_acknowledged) <= cluster.rows("feedback", "card_uuid")


def test_a_replica_killed_under_load_loses_nothing_acknowledged(cluster: Cluster) -> None:
    for replica in cluster.replicas:  # every replica's store is up (after the restart test)
        assert eventually(functools.partial(_store_ok, replica))
    victim = cluster.replicas[1]
    result = run_load(cluster.balancer.base_url, 40, victim.kill, after=10)
    # Only what was in flight on the killed replica may fail: HAProxy retries it on another
    # replica, where its JWT, already seen, is refused as a replay (401: the EHR sends it again
    # with a new JWT), or it gives up (502). Never a 500, and at most one per client thread.
    failed = [s for s in (*result.hook_statuses, *result.feedback_statuses) if s != 200]
    assert set(failed) <= {401, 502} and len(failed) <= 4, failed
    # The others answer on.
    assert all(call_hook(cluster.balancer.base_url).status_code == 200 for _ in range(6))
    survivors = [r for r in cluster.replicas if r is not victim]
    for replica in survivors:
        assert httpx.get(f"{replica.base_url}/readyz", timeout=5).status_code == 200
    # Acknowledged means committed: every card answered and every feedback acknowledged is stored.
    assert set(result.cards) <= cluster.rows("issued_card", "card_uuid")
    assert set(result.feedback_acknowledged) <= cluster.rows("feedback", "card_uuid")
