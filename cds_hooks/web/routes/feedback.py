"""``POST /cds-services/{id}/feedback``: what the clinician did with each card (CDS Hooks 2.0).

Stored idempotently (a resent item counts once); the answer is an empty object once committed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from cds_hooks.errors import BadRequest, ServiceError, UnknownService
from cds_hooks.stores.feedback_store import FeedbackRequest
from cds_hooks.web.bodies import read_json_body
from cds_hooks.web.openapi import SERVICE_ID_PARAMETER, EmptyObject, answers, json_body
from cds_hooks.web.responses import OrjsonResponse
from cds_hooks.web.security import CLIENT_AUTH
from cds_hooks.web.state import ServiceDep, SettingsDep, StoreDep

log = logging.getLogger("crs_cds.app")

router = APIRouter(dependencies=[CLIENT_AUTH])


@router.post(
    "/cds-services/{service_id}/feedback",
    openapi_extra=json_body(FeedbackRequest),
    responses=answers(EmptyObject, "the feedback is stored (a resent item counts once)"),
)
async def feedback(
    service_id: Annotated[str, SERVICE_ID_PARAMETER],
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    if service_id not in service.service_ids:
        raise UnknownService(f"no CDS service '{service_id}'")
    payload = await read_json_body(request, settings.max_body_bytes)
    try:
        items = FeedbackRequest.model_validate(payload).feedback
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadRequest(f"invalid feedback at '{where}': {first['msg']}") from None
    if store is None:
        raise ServiceError("feedback store unavailable")
    added = await asyncio.to_thread(store.record_feedback, service_id, items)
    log.info("feedback stored", extra={"service": service_id, "items": len(items), "new": added})
    return OrjsonResponse({})
