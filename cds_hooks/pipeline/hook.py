"""One hook call end to end: prefetch -> fetch what is missing -> evaluate -> cards.

Routes (``app.py``) and the CLI call into here; nothing here knows HTTP. The data flow is one
way and each stage returns a typed value, so a failure says which stage and why.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cds_hooks.advice.cards import CardOptions, build_cards
from cds_hooks.advice.hlh_cards import build_hlh_cards
from cds_hooks.advice.icans_cards import build_icans_cards
from cds_hooks.advice.order_cards import build_order_cards
from cds_hooks.advice.order_checks import OrderCheckError, check_orders, read_draft_orders
from cds_hooks.advice.steroids import one_steroid_regimen
from cds_hooks.cds import CdsRequest, CdsResponse, Discovery, ServiceDefinition
from cds_hooks.errors import BadRequest, PreconditionFailed, UnknownService, UnprocessableRequest
from cds_hooks.grading import ICANS_SYSTEMS
from cds_hooks.grading.icans import SYSTEM as ASTCT_ICANS
from cds_hooks.pipeline.evaluate import Evaluation, Grading, evaluate
from cds_hooks.reading.bundles import unique
from cds_hooks.reading.fhir_client import FhirFetcher, FhirServerRejected
from cds_hooks.reading.fhir_time import parse_instant
from cds_hooks.reading.prefetch import (
    ORDER_ONLY_SOURCES,
    PrefetchKey,
    build_icans_prefetch,
    build_lab_prefetch,
    build_order_prefetch,
    build_prefetch,
    classify,
    render,
)
from cds_hooks.reading.products import ProductRules, load_products
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.record import DataSource

log = logging.getLogger("crs_cds.service")

SERVICE_ID = "crs-grade"
HOOK = "patient-view"
ORDER_SELECT_SERVICE_ID = "crs-order-select"
ORDER_SIGN_SERVICE_ID = "crs-order-sign"
ORDER_SERVICES = {ORDER_SELECT_SERVICE_ID: "order-select", ORDER_SIGN_SERVICE_ID: "order-sign"}
"""Order services, each answering one hook with both order checks (tocilizumab; T-cell engager/CAR-T)."""
SERVICE_HOOKS = {SERVICE_ID: HOOK, **ORDER_SERVICES}
AT_EXTENSION = "crs-cds-hooks.at"
ORDER_CARD_SOURCE = "CRS order check (tocilizumab and T-cell engager labels)"


MAX_MEDICATION_READS = 20
"""[choice] At most 20 referenced Medications are read per call (each read is one request)."""
MEDICATION_REFERENCE = re.compile(r"(?:^|/)(Medication/[A-Za-z0-9\-.]{1,64})$")


def granted_scope(request: CdsRequest) -> str | None:
    """``fhirAuthorization.scope`` (SMART v1 or v2), used only to explain a refused query."""
    return request.fhirAuthorization.scope if request.fhirAuthorization else None


def unresolved_medications(resources: Sequence[SourcedResource]) -> list[str]:
    """``Medication/<id>`` references of administrations and requests that no Medication in
    ``resources`` resolves (contained ``#id`` references are resolved in the resource itself)."""
    known = {r.reference for r in resources if r.resource.get("resourceType") == "Medication"}
    known |= {
        f"Medication/{r.resource['id']}"
        for r in resources
        if r.resource.get("resourceType") == "Medication" and isinstance(r.resource.get("id"), str)
    }
    wanted: list[str] = []
    for item in resources:
        if item.resource.get("resourceType") not in ("MedicationAdministration", "MedicationRequest"):
            continue
        ref = item.resource.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        match = MEDICATION_REFERENCE.search(target) if isinstance(target, str) else None
        if match is not None and match.group(1) not in known and match.group(1) not in wanted:
            wanted.append(match.group(1))
    return wanted


@dataclass(frozen=True)
class HookOutcome:
    response: CdsResponse
    evaluation: Evaluation


class CrsService:
    """The CRS services: patient-view grading and the order-select / order-sign checks."""

    def __init__(
        self,
        grading: Grading,
        *,
        card_options: CardOptions | None = None,
        fixed_time: datetime | None = None,
        allow_client_time: bool = True,
        fetcher: FhirFetcher | None = None,
        products: ProductRules | None = None,
    ) -> None:
        self.grading = grading
        self.products = products if products is not None else load_products(grading.terminology)
        self.card_options = card_options or CardOptions()
        self.fixed_time = fixed_time
        self.allow_client_time = allow_client_time
        self.fetcher = fetcher
        icans_keys = build_icans_prefetch(grading.terminology) if grading.icans is not None else ()
        lab_keys = build_lab_prefetch(grading.labs.table, grading.terminology) if grading.labs is not None else ()
        self.prefetch_keys: tuple[PrefetchKey, ...] = (*build_prefetch(grading.terminology), *icans_keys, *lab_keys)
        # ICANS assessments too: an engager dose is held during ICANS (the labels' boxed warnings).
        # Labs too: the order cards of a CAR-T order show the risk scores read from them.
        self.order_prefetch_keys: tuple[PrefetchKey, ...] = (
            *build_order_prefetch(grading.terminology),
            *icans_keys,
            *lab_keys,
        )

    @property
    def service_ids(self) -> frozenset[str]:
        return frozenset(SERVICE_HOOKS)

    def icans_systems(self) -> list[str]:
        """The ICANS systems graded (ASTCT's first, then those chosen); none when ICANS is off."""
        if self.grading.icans is None:
            return []
        chosen = [s for s in dict.fromkeys(self.grading.systems) if s in ICANS_SYSTEMS and s != ASTCT_ICANS]
        return [ASTCT_ICANS, *chosen]

    def discovery(self) -> Discovery:
        crs_systems = [s for s in dict.fromkeys(self.grading.systems) if s not in ICANS_SYSTEMS]
        icans_systems = self.icans_systems()
        icans = f"; grades ICANS on a separate card ({', '.join(icans_systems)})" if icans_systems else ""
        return Discovery(
            services=[
                ServiceDefinition(
                    hook=HOOK,
                    id=SERVICE_ID,
                    title="Cytokine release syndrome grade (ASTCT)",
                    description=(
                        "Grades CRS after CAR-T or T-cell engager therapy from vital signs, oxygen support and "
                        f"vasopressors ({', '.join(crs_systems)}){icans}; shows the evidence, what is missing, and "
                        "guideline actions "
                        "with tocilizumab dosing within label limits."
                    ),
                    prefetch={key.name: key.template for key in self.prefetch_keys},
                    usageRequirements=(
                        "Patients after CAR-T or bispecific T-cell engager therapy. Needs vital signs, oxygen "
                        "support records and MedicationAdministrations (prefetch or FHIR server access)."
                    ),
                    extension={
                        "crs-cds-hooks.systems": crs_systems,
                        **({"crs-cds-hooks.icans-systems": icans_systems} if icans_systems else {}),
                    },
                ),
                *(self._order_definition(service_id, hook) for service_id, hook in ORDER_SERVICES.items()),
            ]
        )

    def _order_definition(self, service_id: str, hook: str) -> ServiceDefinition:
        scope = "the selected draft orders" if hook == "order-select" else "every draft order"
        return ServiceDefinition(
            hook=hook,
            id=service_id,
            title=f"CRS order check ({hook}): tocilizumab limits, T-cell engager and CAR-T safety",
            description=(
                f"Checks {scope}: a tocilizumab dose against 8 mg/kg (12 mg/kg under 30 kg), 800 mg, 8 h since the "
                "last dose, 3 doses in 24 h and 4 in total, with a corrected order; before a T-cell engager or "
                "CAR-T, signs of active infection, missing premedication and the monitoring plan. Shows the "
                "current CRS grade."
            ),
            prefetch={key.name: key.template for key in self.order_prefetch_keys},
            usageRequirements=(
                "context.draftOrders (a Bundle of MedicationRequests) is required. Needs vital signs, weight, "
                "MedicationAdministrations, active Conditions and blood cultures (prefetch or FHIR server access)."
            ),
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
        hook = SERVICE_HOOKS.get(service_id)
        if hook is None:
            raise UnknownService(f"no CDS service '{service_id}'")
        if request.hook != hook:
            raise BadRequest(f"service '{service_id}' answers '{hook}', not '{request.hook}'")
        if service_id in ORDER_SERVICES:
            return await self._call_order(request)
        evaluation = await self.gather_and_evaluate(request)
        cards = one_steroid_regimen(
            [
                *build_cards(evaluation, self.card_options),
                *build_icans_cards(evaluation, self.card_options),
                *build_hlh_cards(evaluation, self.card_options),
            ]
        )
        return HookOutcome(CdsResponse(cards=cards), evaluation)

    async def gather_and_evaluate(self, request: CdsRequest) -> Evaluation:
        """The patient-view data path (prefetch, fetch what is missing, 412 rules) and the grading.

        Shared by the hook and the course route, so the course always rests on the same data and
        fails the same way as the card it explains.
        """
        at = self.evaluation_time(request)
        resources, unavailable, malformed = await self._gather(request, self.prefetch_keys)
        evaluation = evaluate(
            resources, patient_id=request.context.patientId, at=at, grading=self.grading, unavailable=unavailable
        )
        if malformed:
            log.info("prefetch entries skipped", extra={"malformed_entries": malformed})
        return evaluation

    async def _call_order(self, request: CdsRequest) -> HookOutcome:
        """order-select / order-sign: grade (for the card), then check the draft orders."""
        context = request.context.model_extra or {}
        if context.get("draftOrders") is None:
            raise UnprocessableRequest(f"{request.hook} needs context.draftOrders (a Bundle of draft orders)")
        selections = context.get("selections") if request.hook == "order-select" else None
        if selections is not None and (
            not isinstance(selections, list) or not all(isinstance(s, str) for s in selections)
        ):
            raise UnprocessableRequest("context.selections must be a list of references")
        terminology = self.grading.terminology
        try:
            drafts = read_draft_orders(context["draftOrders"], terminology, self.grading.units, selections=selections)
        except OrderCheckError as exc:
            raise UnprocessableRequest(str(exc)) from None
        at = self.evaluation_time(request)
        patient_id = request.context.patientId
        resources, unavailable, malformed = await self._gather(
            request,
            self.order_prefetch_keys,
            also=[SourcedResource(d.resource, d.reference or "draft") for d in drafts],
        )
        grading_unavailable = {k: v for k, v in unavailable.items() if k not in ORDER_ONLY_SOURCES}
        evaluation = evaluate(
            resources, patient_id=patient_id, at=at, grading=self.grading, unavailable=grading_unavailable
        )
        if malformed:
            log.info("prefetch entries skipped", extra={"malformed_entries": malformed})
        medications = {r.reference: r.resource for r in resources if r.resource.get("resourceType") == "Medication"}
        if medications:  # a draft's medicationReference may point at a Medication in the prefetch
            drafts = read_draft_orders(
                context["draftOrders"], terminology, self.grading.units, selections=selections, medications=medications
            )
        findings = check_orders(
            drafts,
            evaluation.record,
            terminology,
            at,
            unavailable=unavailable,
            products=self.products,
            crs=evaluation.primary,
            icans=evaluation.icans,
            config=self.grading.config,
        )
        cards = build_order_cards(
            evaluation, findings, ORDER_CARD_SOURCE, site_timezone=self.card_options.site_timezone
        )
        return HookOutcome(CdsResponse(cards=cards), evaluation)

    async def _gather(
        self, request: CdsRequest, keys: tuple[PrefetchKey, ...], *, also: Sequence[SourcedResource] = ()
    ) -> tuple[list[SourcedResource], dict[DataSource, str], int]:
        """The prefetch, what is fetched for absent keys, and the Medications referenced but absent;
        ``also`` (draft orders) are searched for Medication references too, never returned."""
        state = classify(request.prefetch, keys)
        resources = list(state.resources)
        unavailable = dict(state.unavailable)
        server = request.fhirServer
        if state.to_fetch and server is None:
            given = request.prefetch or {}
            for key in [k for k in state.to_fetch if k.optional and k.name not in given]:
                unavailable.setdefault(key.source, f"prefetch '{key.name}' not sent and no fhirServer")
            absent = [k.name for k in state.to_fetch if not k.optional and k.name not in given]
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
        if server is not None and self.fetcher is not None:
            resources.extend(await self._fetch_medications(request, server, [*resources, *also]))
        return unique(resources), unavailable, sum(state.malformed.values())

    async def _fetch_medications(
        self, request: CdsRequest, fhir_server: str, resources: Sequence[SourcedResource]
    ) -> list[SourcedResource]:
        """Read the Medications that administrations (or draft orders) reference but the data lack,
        so a dose charted as ``medicationReference`` is not invisible (issue 16). A failed read
        leaves the reference unresolved: the order cards then name the administration."""
        wanted = unresolved_medications(resources)[:MAX_MEDICATION_READS]
        if not wanted or self.fetcher is None:
            return []
        token = request.fhirAuthorization.access_token if request.fhirAuthorization else None
        try:
            results = await self.fetcher.fetch_all(
                fhir_server, {ref: ref for ref in wanted}, access_token=token, scope=granted_scope(request)
            )
        except FhirServerRejected:
            return []
        return [
            item
            for result in results.values()
            for item in result.resources
            if item.resource.get("resourceType") == "Medication"
        ]

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
            results = await self.fetcher.fetch_all(
                fhir_server, queries, access_token=token, scope=granted_scope(request)
            )
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
