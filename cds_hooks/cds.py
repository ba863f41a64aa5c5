"""CDS Hooks 2.0 request and response models: the spec's names live only here.

Responses are serialised with ``exclude_none``; optional lists default to None, never ``[]``,
because the spec forbids null and empty values (the one exception is ``{"cards": []}``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# -- requests -------------------------------------------------------------------------------


class FhirAuthorization(BaseModel):
    model_config = ConfigDict(extra="allow")

    access_token: str = Field(min_length=1, repr=False)
    token_type: Literal["Bearer"]
    expires_in: int | None = None
    scope: str
    subject: str
    patient: str | None = None


class HookContext(BaseModel):
    model_config = ConfigDict(extra="allow")

    userId: str | None = None
    patientId: str = Field(json_schema_extra={"pattern": FHIR_ID.pattern})
    encounterId: str | None = None

    @field_validator("patientId")
    @classmethod
    def _fhir_id(cls, value: str) -> str:
        if not FHIR_ID.match(value):
            raise ValueError("patientId must be a FHIR id ([A-Za-z0-9-.]{1,64})")
        return value


class CdsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    hook: str = Field(min_length=1, json_schema_extra={"enum": ["patient-view", "order-select", "order-sign"]})
    """Any other hook is refused with a 400 naming the hook the service answers."""
    hookInstance: str = Field(min_length=1, max_length=128)
    context: HookContext
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None


# -- discovery ------------------------------------------------------------------------------


class ServiceDefinition(_Out):
    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None
    hookVersion: str | None = None
    """CDS Hooks 3.0: the version of the hook definition served; sent only when configured."""
    extension: dict[str, Any] | None = None


HOOK_VERSIONS = {"patient-view": "1.0", "order-select": "1.0", "order-sign": "1.0"}
"""The hook definitions served (CDS Hooks Library metadata ``hookVersion``)."""


class Discovery(_Out):
    services: list[ServiceDefinition]

    def with_hook_versions(self) -> Discovery:
        """CDS Hooks 3.0: each service names the version of its hook; 2.0 clients ignore the field."""
        return Discovery(
            services=[s.model_copy(update={"hookVersion": HOOK_VERSIONS.get(s.hook)}) for s in self.services]
        )


# -- cards ----------------------------------------------------------------------------------


class Coding(_Out):
    system: str | None = None
    code: str
    display: str | None = None


class Source(_Out):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Out):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: str | None = None


class Suggestion(_Out):
    label: str
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(_Out):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(_Out):
    uuid: str
    summary: str = Field(max_length=140)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None


class CdsResponse(_Out):
    cards: list[Card]

    def dump(self) -> dict[str, Any]:
        # ``cards`` is the one list allowed to be empty.
        return {"cards": [card.dump() for card in self.cards]}


# -- errors ---------------------------------------------------------------------------------


class OperationOutcomeIssue(_Out):
    severity: Literal["fatal", "error", "warning", "information"]
    code: str
    diagnostics: str | None = None


class OperationOutcome(_Out):
    """Every error answer: a short FHIR OperationOutcome (the shape CDS Hooks 3.0 proposes)."""

    resourceType: Literal["OperationOutcome"]
    issue: list[OperationOutcomeIssue] = Field(min_length=1)
