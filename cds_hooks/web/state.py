"""What the routers share, built once by ``create_app`` and reached through FastAPI dependencies.

Why one typed object on ``app.state`` instead of closures: each router module stays a plain
module that a reader (and a test) can open alone, and what a route may touch is named in its
signature (``ServiceDep``, ``StoreDep``...) rather than captured from an enclosing function.
The lifespan fills in what lives only while the app runs (the shared HTTP client, the
authenticator, the store) and clears it on shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

import httpx
from fastapi import Depends, Request

from cds_hooks.pipeline.hook import CrsService
from cds_hooks.reading.fhir_client import FetchPolicy
from cds_hooks.settings import Settings
from cds_hooks.stores.card_spool import CardRecorder
from cds_hooks.stores.database import Database
from cds_hooks.stores.feedback_store import FeedbackStore
from cds_hooks.web.auth import ClientAuthenticator


@dataclass
class WebState:
    """Settings and services for every router; the ones after ``database`` are set by the lifespan."""

    settings: Settings
    service: CrsService
    policy: FetchPolicy
    database: Database
    """The one database connection (cards, feedback, JWT replay check, shared SMART sessions)."""
    authenticator: ClientAuthenticator | None = None
    store: FeedbackStore | None = None
    recorder: CardRecorder | None = None
    """Card records: committed before the card, or spooled while the store is down."""
    http: httpx.AsyncClient | None = None
    """The shared outbound client (FHIR reads, JWKS, the SMART app's discovery and token calls)."""


def web_state(request: Request) -> WebState:
    return cast(WebState, request.app.state.web)


def _settings(request: Request) -> Settings:
    return web_state(request).settings


def _service(request: Request) -> CrsService:
    return web_state(request).service


def _store(request: Request) -> FeedbackStore | None:
    return web_state(request).store


def _recorder(request: Request) -> CardRecorder | None:
    return web_state(request).recorder


StateDep = Annotated[WebState, Depends(web_state)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ServiceDep = Annotated[CrsService, Depends(_service)]
StoreDep = Annotated[FeedbackStore | None, Depends(_store)]
RecorderDep = Annotated[CardRecorder | None, Depends(_recorder)]
