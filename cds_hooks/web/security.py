"""CDS client authentication as a FastAPI dependency: routers declare it, none calls it by hand."""

from __future__ import annotations

import logging

from fastapi import Depends, Request

from cds_hooks.errors import ServiceError
from cds_hooks.web.auth import Unauthorized
from cds_hooks.web.state import web_state

log = logging.getLogger("crs_cds.app")


class Unauthenticated(ServiceError):
    """401 with ``WWW-Authenticate: Bearer``; the reason stays in the log, never in the answer."""

    status = 401


async def authenticate(request: Request) -> None:
    """Verify the EHR's JWT for this path; a no-op only when authentication is off (development)."""
    authenticator = web_state(request).authenticator
    if authenticator is None:
        return
    try:
        await authenticator.verify(request.headers.get("authorization"), request.scope["path"])
    except Unauthorized as exc:
        log.warning("authentication failed", extra={"reason": exc.reason, "path": request.scope["path"]})
        raise Unauthenticated("unauthorized") from None


CLIENT_AUTH = Depends(authenticate)
"""Add to a router's ``dependencies``: every route on it needs an authenticated CDS client."""
