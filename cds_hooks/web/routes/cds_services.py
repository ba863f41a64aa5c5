"""CDS Hooks discovery and service calls: ``GET /cds-services``, ``POST /cds-services/{id}``.

Routes only: the hook's work is ``CrsService.call``; this module reads the request, records the
issued cards (so feedback can be joined to what was shown) and logs one line per call, with the
patient as a hash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cds_hooks.cds import CdsRequest, CdsResponse, Discovery
from cds_hooks.pipeline.hook import HookOutcome
from cds_hooks.stores.feedback_store import IssuedCard, patient_hash
from cds_hooks.web.bodies import read_hook_request
from cds_hooks.web.openapi import SERVICE_ID_PARAMETER, answers, json_body
from cds_hooks.web.responses import OrjsonResponse
from cds_hooks.web.security import CLIENT_AUTH
from cds_hooks.web.state import RecorderDep, ServiceDep, SettingsDep

log = logging.getLogger("crs_cds.app")

router = APIRouter(dependencies=[CLIENT_AUTH])


@router.get("/cds-services", responses=answers(Discovery, "the CDS services offered"))
async def discovery(service: ServiceDep, settings: SettingsDep) -> Response:
    offered = service.discovery()
    if settings.discovery_hook_version:
        offered = offered.with_hook_versions()
    return OrjsonResponse(offered.dump())


@router.post(
    "/cds-services/{service_id}",
    openapi_extra=json_body(CdsRequest),
    responses=answers(CdsResponse, "the cards (an empty list when there is nothing to show)"),
)
async def call_service(
    service_id: Annotated[str, SERVICE_ID_PARAMETER],
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    recorder: RecorderDep,
) -> Response:
    started = time.perf_counter()
    hook_request = await read_hook_request(request, settings.max_body_bytes)
    outcome = await service.call(service_id, hook_request)
    body = outcome.response.dump()
    if recorder is not None and outcome.response.cards:
        # Committed before the card is answered; spooled (and the card still served) while the
        # store is down: cards matter more than their records.
        await asyncio.to_thread(recorder.record, issued_cards(service_id, hook_request, outcome))
    primary = outcome.evaluation.primary
    log.info(
        "hook answered",
        extra={
            "service": service_id,
            "hook_instance": hook_request.hookInstance,
            "patient": patient_hash(hook_request.context.patientId),
            "grade": primary.grade,
            "grade_at_least": primary.grade_at_least,
            "cards": len(body["cards"]),
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return OrjsonResponse(body)


def issued_cards(service_id: str, request: CdsRequest, outcome: HookOutcome) -> list[IssuedCard]:
    """What the store keeps of each card shown: grade, evidence references, suggestions; no ids."""
    primary = outcome.evaluation.primary
    return [
        IssuedCard(
            card_uuid=card.uuid,
            service_id=service_id,
            hook_instance=request.hookInstance,
            patient_hash=patient_hash(request.context.patientId),
            system=primary.system,
            grade=primary.grade,
            grade_at_least=primary.grade_at_least,
            evaluated_at=primary.at,
            evidence_references=primary.references,
            suggestions=[(s.uuid or "", s.label) for s in card.suggestions or []],
        )
        for card in outcome.response.cards
    ]
