"""``GET /healthz``: liveness only (the process answers); no authentication, no dependencies."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from cds_hooks.web.responses import OrjsonResponse

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> Response:
    return OrjsonResponse({"status": "ok"})
