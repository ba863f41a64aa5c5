"""``GET /healthz``: liveness (the process answers). ``GET /readyz``: readiness for a load balancer.

``/readyz`` answers 503 only when this replica cannot grade (its lifespan has not started or has
ended). A database outage or a failing issuer JWKS URL is reported as ``degraded`` in the body,
with 200: the replica still serves cards (their records spooled), and taking every replica out
of the load balancer for an outage they all share would take the cards away too.
No authentication and no patient data: what it says is safe to show a load balancer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from cds_hooks.web.responses import OrjsonResponse
from cds_hooks.web.state import StateDep

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> Response:
    return OrjsonResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(state: StateDep) -> Response:
    ready = state.http is not None and state.recorder is not None
    health = await asyncio.to_thread(state.database.check)  # tries it (within its backoff), off the loop
    store: dict[str, Any] = {"status": "ok" if health.state == "up" else "degraded", "database": health.description}
    if state.recorder is not None:
        store["spooledCardRecords"] = state.recorder.pending
        store["lostCardRecords"] = state.recorder.dropped
    issuers: dict[str, str] = {}
    if state.authenticator is not None:
        for iss, issuer in state.authenticator.issuers.items():
            if issuer.jwks_url is not None:
                issuers[iss] = "degraded" if state.authenticator.jwks.status(issuer.jwks_url) == "failing" else "ok"
    degraded = store["status"] != "ok" or "degraded" in issuers.values()
    body = {
        "status": "not ready" if not ready else ("degraded" if degraded else "ready"),
        "store": store,
        "jwks": issuers,
    }
    return OrjsonResponse(body, status_code=200 if ready else 503)
