"""One hook call end to end: prefetch -> fetch what is missing -> evaluate -> cards.

Routes (``app.py``) and the CLI call into here; nothing here knows HTTP. The data flow is one
way and each stage returns a typed value, so a failure says which stage and why.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .bundles import unique
from .cards import CardOptions, build_cards
from .cds import CdsRequest, CdsResponse, Discovery, ServiceDefinition
from .errors import BadRequest, PreconditionFailed, UnknownService
from .evaluate import Evaluation, Grading, evaluate
from .extract import SourcedResource
from .fhir_client import FhirFetcher, FhirServerRejected
from .fhir_time import parse_instant
from .findings import DataSource
from .prefetch import PrefetchKey, build_prefetch, classify, render

log = logging.getLogger("crs_cds.service")

SERVICE_ID = "crs-grade"
HOOK = "patient-view"
AT_EXTENSION = "crs-cds-hooks.at"


@dataclass(frozen=True)
class HookOutcome:
    response: CdsResponse
    evaluation: Evaluation


class CrsService:
    """The patient-view CRS grading service."""

    def __init__(
        self,
        grading: Grading,
        *,
        card_options: CardOptions | None = None,
        fixed_time: datetime | None = None,
        allow_client_time: bool = True,
        fetcher: FhirFetcher | None = None,
    ) -> None:
        self.grading = grading
        self.card_options = card_options or CardOptions()
        self.fixed_time = fixed_time
        self.allow_client_time = allow_client_time
        self.fetcher = fetcher
        self.prefetch_keys: tuple[PrefetchKey, ...] = build_prefetch(grading.terminology)

    def discovery(self) -> Discovery:
        systems = ", ".join(self.grading.systems)
        return Discovery(
            services=[
                ServiceDefinition(
                    hook=HOOK,
                    id=SERVICE_ID,
                    title="Cytokine release syndrome grade (ASTCT)",
                    description=(
                        "Grades CRS after CAR-T or T-cell engager therapy from vital signs, oxygen support and "
                        f"vasopressors ({systems}); shows the evidence, what is missing, and guideline actions "
                        "with tocilizumab dosing within label limits."
                    ),
                    prefetch={key.name: key.template for key in self.prefetch_keys},
                    usageRequirements=(
                        "Patients after CAR-T or bispecific T-cell engager therapy. Needs vital signs, oxygen "
                        "support records and MedicationAdministrations (prefetch or FHIR server access)."
                    ),
                    extension={"crs-cds-hooks.systems": list(self.grading.systems)},
                )
            ]
        )

    def evaluation_time(self, request: CdsRequest) -> datetime:
        """The call's time, unless a fixed time is configured or the client asks for one."""
        if self.allow_client_time and request.extension and AT_EXTENSION in request.extension:
            parsed = parse_instant(request.extension[AT_EXTENSION])
            if isinstance(parsed, str):
                raise BadRequest(f"extension {AT_EXTENSION}: {parsed}")
            return parsed
        return self.fixed_time or datetime.now(UTC)

    async def call(self, service_id: str, request: CdsRequest) -> HookOutcome:
        if service_id != SERVICE_ID:
            raise UnknownService(f"no CDS service '{service_id}'")
        if request.hook != HOOK:
            raise BadRequest(f"service '{service_id}' answers '{HOOK}', not '{request.hook}'")
        at = self.evaluation_time(request)
        patient_id = request.context.patientId
        resources, unavailable, malformed = await self._gather(request)
        evaluation = evaluate(resources, patient_id=patient_id, at=at, grading=self.grading, unavailable=unavailable)
        if malformed:
            log.info("prefetch entries skipped", extra={"malformed_entries": malformed})
        cards = build_cards(evaluation, self.card_options)
        return HookOutcome(CdsResponse(cards=cards), evaluation)

    async def _gather(self, request: CdsRequest) -> tuple[list[SourcedResource], dict[DataSource, str], int]:
        state = classify(request.prefetch, self.prefetch_keys)
        resources = list(state.resources)
        unavailable = dict(state.unavailable)
        server = request.fhirServer
        if state.to_fetch and server is None:
            absent = [k.name for k in state.to_fetch if request.prefetch is None or k.name not in request.prefetch]
            if absent:
                raise PreconditionFailed(
                    f"prefetch keys missing and no fhirServer to fetch them from: {', '.join(absent)}"
                )
        elif state.to_fetch and server is not None:
            fetched, still_unavailable = await self._fetch(request, server, state.to_fetch)
            resources.extend(fetched)
            for key in state.to_fetch:
                unavailable.pop(key.source, None)
            unavailable.update(still_unavailable)
        # Required data the client could not supply (an OperationOutcome) and that could not be
        # fetched either, with or without a fhirServer: CDS Hooks 2.0 says 412, not a guess.
        for source in (DataSource.PATIENT, DataSource.OBSERVATIONS):
            if source in unavailable:
                raise PreconditionFailed(f"{source.value} data could not be obtained: {unavailable[source]}")
        return unique(resources), unavailable, sum(state.malformed.values())

    async def _fetch(
        self, request: CdsRequest, fhir_server: str, keys: Sequence[PrefetchKey]
    ) -> tuple[list[SourcedResource], dict[DataSource, str]]:
        names = ", ".join(key.name for key in keys)
        if self.fetcher is None:
            raise PreconditionFailed(f"prefetch keys missing ({names}) and fetching from fhirServer is disabled")
        context = request.context.model_dump(exclude_none=True)
        queries = {key.name: render(key.template, context) for key in keys}
        token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
        try:
            results = await self.fetcher.fetch_all(fhir_server, queries, access_token=token)
        except FhirServerRejected as exc:
            raise PreconditionFailed(f"{exc}; prefetch keys missing: {names}") from None
        resources: list[SourcedResource] = []
        unavailable: dict[DataSource, str] = {}
        for key in keys:
            result = results[key.name]
            resources.extend(result.resources)
            if result.error is not None:
                unavailable[key.source] = result.error
        return resources, unavailable
