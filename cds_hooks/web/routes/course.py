"""``POST /cds-services/crs-grade/course``: the CRS course (grade at every data time, with findings).

Same body, authentication, data path and errors as the patient-view hook; no cards, and nothing
stored (it issues no advice). The SMART app's page is drawn from the same document.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cds_hooks.cds import CdsRequest
from cds_hooks.errors import BadRequest
from cds_hooks.pipeline.course import course_document
from cds_hooks.pipeline.hook import HOOK, SERVICE_ID
from cds_hooks.stores.feedback_store import patient_hash
from cds_hooks.web.bodies import read_hook_request
from cds_hooks.web.openapi import CourseDocument, answers, json_body
from cds_hooks.web.responses import OrjsonResponse
from cds_hooks.web.security import CLIENT_AUTH
from cds_hooks.web.state import ServiceDep, SettingsDep

log = logging.getLogger("crs_cds.app")

router = APIRouter(dependencies=[CLIENT_AUTH])


@router.post(
    f"/cds-services/{SERVICE_ID}/course",
    openapi_extra=json_body(CdsRequest),
    responses=answers(CourseDocument, "the CRS course: the grade at every data time"),
)
async def course(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    started = time.perf_counter()
    hook_request = await read_hook_request(request, settings.max_body_bytes)
    if hook_request.hook != HOOK:
        raise BadRequest(f"the course takes a '{HOOK}' request, not '{hook_request.hook}'")
    evaluation = await service.gather_and_evaluate(hook_request)
    body = course_document(evaluation, service.grading.config, hook_request.context.patientId)
    log.info(
        "course answered",
        extra={
            "patient": patient_hash(hook_request.context.patientId),
            "points": len(body["course"].get("grades", [])),
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
    return OrjsonResponse(body)
