"""Optional write-back of an alert to the FHIR server, as a resource the EHR can show.

``CRS_CDS_WATCH_WRITEBACK=communication``: a completed Communication (the alert's summary as its
payload, ``about`` the evidence, ``priority`` urgent for a grade of 3 or more and for stale data,
else routine) [choice]; ``flag``: an active clinical Flag with the summary as its code text and the
alert time as its period start [choice]. Both carry the alert id as an identifier and are created
with ``If-None-Exist`` on it, so a retry after a lost answer does not create a second resource on a
server that honours conditional create. Each resource is validated with the FHIR R4B models before
it is sent: an invalid resource is never written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.flag import Flag
from pydantic import ValidationError

IDENTIFIER_SYSTEM = "urn:crs-cds-hooks:watch-alert"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"


class WritebackError(Exception):
    """The resource could not be built or written; the message holds no patient id or token."""


def build_resource(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The Communication or Flag for one alert body (with its ``patient``), validated (R4B)."""
    identifier = [{"system": IDENTIFIER_SYSTEM, "value": body["id"]}]
    subject = {"reference": body["patient"]}
    summary = str(body["summary"])
    if kind == "communication":
        grade = body.get("grade")
        urgent = body["kind"] == "stale-data" or (isinstance(grade, int) and grade >= 3)
        resource: dict[str, Any] = {
            "resourceType": "Communication",
            "identifier": identifier,
            "status": "completed",
            "category": [{"text": "CRS/ICANS watch alert"}],
            "priority": "urgent" if urgent else "routine",
            "subject": subject,
            "sent": body["at"],
            "payload": [{"contentString": summary}],
        }
        if body.get("references"):
            resource["about"] = [{"reference": ref} for ref in body["references"]]
        model: type[Communication] | type[Flag] = Communication
    elif kind == "flag":
        resource = {
            "resourceType": "Flag",
            "identifier": identifier,
            "status": "active",
            "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}],
            "code": {"text": summary},
            "subject": subject,
            "period": {"start": body["at"]},
        }
        model = Flag
    else:
        raise WritebackError(f"unknown write-back kind {kind!r}")
    try:
        model.model_validate(resource)
    except (ValidationError, ValueError) as exc:
        what = resource["resourceType"]
        raise WritebackError(f"the {what} fails FHIR R4B validation ({type(exc).__name__})") from None
    return resource


async def write_back(
    client: httpx.AsyncClient, base_url: str, resource: Mapping[str, Any], *, access_token: str | None, timeout_s: float
) -> str:
    """Create the resource (conditional on its identifier); its reference, or :class:`WritebackError`."""
    kind = str(resource["resourceType"])
    identifier = resource["identifier"][0]
    headers = {
        "Content-Type": "application/fhir+json",
        "Accept": "application/fhir+json",
        "If-None-Exist": f"identifier={identifier['system']}|{identifier['value']}",
    }
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    try:
        response = await client.post(
            f"{base_url}/{kind}", json=dict(resource), headers=headers, timeout=timeout_s, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        raise WritebackError(f"{kind} write-back failed: FHIR server unreachable ({type(exc).__name__})") from None
    if response.status_code not in (200, 201):
        raise WritebackError(f"{kind} write-back refused with HTTP {response.status_code}")
    location = response.headers.get("Location") or response.headers.get("Content-Location") or ""
    marker = f"{kind}/"
    if marker in location:
        return marker + location.split(marker, 1)[1].split("/", 1)[0]
    try:
        created = response.json()
    except ValueError:
        created = None
    if isinstance(created, dict) and isinstance(created.get("id"), str):
        return f"{kind}/{created['id']}"
    return kind
