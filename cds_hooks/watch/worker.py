"""One watcher: every cycle, if it holds the lease, re-grade each watched patient the hook's way,
apply the alert rules to what was alerted before, store new alerts with the state that stops them
repeating, deliver what is undelivered, and write back where the site asks.

Order of a cycle, and why: the lease first (only one watcher works); the new state and its alerts
are committed together before any delivery (a crash after the commit re-sends the stored alert
with the same id, never a second alert for the same event); delivery last, renewing the lease
before each alert so that a watcher that lost it stops sending. A patient whose data cannot be
read is not graded this cycle (what the hook answers with 412): nothing is stored for it, so a
server outage never reads as "grade 0" nor resets what was alerted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cds_hooks.advice.dosing import dose_history
from cds_hooks.pipeline.evaluate import Grading, evaluate
from cds_hooks.reading.fhir_client import FhirFetcher
from cds_hooks.reading.prefetch import build_icans_prefetch, build_prefetch
from cds_hooks.reading.record import DataSource
from cds_hooks.stores.database import StoreUnavailable
from cds_hooks.stores.feedback_store import patient_hash
from cds_hooks.stores.watch_store import WRITEBACK_DONE, WRITEBACK_PENDING, StoredAlert, WatchStore
from cds_hooks.watch.access import AccessError, BackendServicesToken, StaticToken, TokenSource
from cds_hooks.watch.config import WatchConfig
from cds_hooks.watch.delivery import WebhookSender
from cds_hooks.watch.reading import ChartReader
from cds_hooks.watch.rules import AlertDraft, PatientState, decide
from cds_hooks.watch.snapshot import board_snapshot
from cds_hooks.watch.view import patient_view
from cds_hooks.watch.writeback import WritebackError, build_resource, write_back

log = logging.getLogger("crs_cds.watch")

LEASE_NAME = "crs-cds-watch"
ALERT_NAMESPACE = uuid.UUID("6f1c3c2e-2f55-4c59-9a35-0c7f3b7c9e15")
_REQUIRED = (DataSource.PATIENT, DataSource.OBSERVATIONS)


@dataclass
class CycleReport:
    """What one cycle did (counts only: printed by ``crs-cds watch`` and logged)."""

    lease_held: bool
    patients: int = 0
    graded: int = 0
    ungraded: int = 0
    full_reads: int = 0
    alerts: int = 0
    delivered: int = 0
    undelivered: int = 0
    written_back: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {_camel(k): v for k, v in asdict(self).items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def alert_id(hashed_patient: str, draft: AlertDraft) -> str:
    """The same event always has the same id (so a receiver, or the store, can drop a repeat)."""
    return str(uuid.uuid5(ALERT_NAMESPACE, f"{hashed_patient}|{draft.kind}|{draft.system}|{draft.event}"))


def stored_alert(hashed_patient: str, draft: AlertDraft, *, writeback: bool) -> StoredAlert:
    identifier = alert_id(hashed_patient, draft)
    body = {
        "id": identifier,
        "kind": draft.kind.value,
        "system": draft.system,
        "grade": draft.grade,
        "previousGrade": draft.previous_grade,
        "indeterminate": draft.indeterminate,
        "at": draft.at.isoformat().replace("+00:00", "Z"),
        "references": list(draft.references),
        "summary": draft.summary,
    }
    return StoredAlert(
        alert_id=identifier,
        patient_hash=hashed_patient,
        kind=draft.kind.value,
        system=draft.system,
        grade=draft.grade,
        created_at=draft.at,
        body=body,
        writeback_status=WRITEBACK_PENDING if writeback else None,
    )


def token_source(config: WatchConfig) -> TokenSource:
    if config.backend is not None:
        return BackendServicesToken(
            config.fhir_server,
            config.backend,
            allow_insecure=config.policy.allow_insecure,
            timeout_s=config.policy.request_timeout_seconds,
        )
    return StaticToken(config.static_token or "")


class Watcher:
    def __init__(
        self,
        config: WatchConfig,
        grading: Grading,
        store: WatchStore,
        client: httpx.AsyncClient,
        *,
        holder: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tokens: TokenSource | None = None,
    ) -> None:
        self.config = config
        self.grading = grading
        self.store = store
        self.client = client
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.tokens = tokens or token_source(config)
        keys = build_prefetch(grading.terminology)
        if grading.icans is not None:
            keys = (*keys, *build_icans_prefetch(grading.terminology))
        fetcher = FhirFetcher(client, config.policy)
        full_read = timedelta(seconds=config.full_read_s)
        self.reader = ChartReader(fetcher, config.fhir_server, keys, full_read=full_read)
        self.sender = WebhookSender(client, config.webhook, store)

    def _hold_lease(self) -> bool:
        now = self.clock()
        return self.store.take_lease(LEASE_NAME, self.holder, ttl_s=self.config.lease_s, now_s=now.timestamp())

    def release(self) -> None:
        self.store.release_lease(LEASE_NAME, self.holder)

    async def cycle(self) -> CycleReport:
        """One cycle; with the database down it does nothing (it cannot know who holds the lease)."""
        try:
            return await self._cycle()
        except StoreUnavailable as exc:
            log.warning("store unavailable: this cycle stops", extra={"reason": str(exc)})
            return CycleReport(lease_held=False, error=str(exc))

    async def _cycle(self) -> CycleReport:
        if not self._hold_lease():
            log.info("another watcher holds the lease: not working this cycle")
            return CycleReport(lease_held=False)
        report = CycleReport(lease_held=True)
        try:
            token = await self.tokens.token(self.client)
        except AccessError as exc:
            log.error("no access to the FHIR server this cycle", extra={"reason": str(exc)})
            report.error = str(exc)
            return report
        if self.config.group is not None:
            patients = await self.reader.group_members(self.config.group, access_token=token)
        else:
            patients = list(self.config.patients)
        self.reader.forget(patients)
        watched = {patient_hash(p): p for p in patients}
        report.patients = len(patients)
        for patient_id in patients:
            if not self._hold_lease():
                log.warning("lease lost during the cycle: stopping")
                return report
            await self._watch_patient(patient_id, token, report)
        await self._deliver(watched, report)
        if self.config.writeback != "none":
            await self._write_back(watched, token, report)
        return report

    async def _watch_patient(self, patient_id: str, token: str | None, report: CycleReport) -> None:
        hashed = patient_hash(patient_id)
        at = self.clock()
        read = await self.reader.read(patient_id, at=at, access_token=token)
        report.full_reads += 1 if read.full else 0
        missing = {s: r for s, r in read.unavailable.items() if s in _REQUIRED}
        if missing:
            report.ungraded += 1
            log.warning(
                "patient not graded this cycle: required data unavailable",
                # The sources only: a server's OperationOutcome text may quote the patient id.
                extra={"patient": hashed, "sources": sorted(source.value for source in missing)},
            )
            return
        try:
            evaluation = evaluate(
                read.resources, patient_id=patient_id, at=at, grading=self.grading, unavailable=read.unavailable
            )
            view = patient_view(evaluation, self.grading)
        except Exception as exc:  # one chart must not stop the ward's watch; the reason is logged
            report.ungraded += 1
            log.error("patient could not be graded", extra={"patient": hashed, "error": type(exc).__name__})
            return
        previous = PatientState.from_json(self.store.load_state(hashed))
        decision = decide(previous, view, self.config.rules)
        alerts = [stored_alert(hashed, d, writeback=self.config.writeback != "none") for d in decision.alerts]
        given = dose_history(evaluation.record, at, self.grading.config).total
        board = board_snapshot(self.store.load_board(hashed), view, tocilizumab_given=given)
        self.store.save_cycle(hashed, decision.state.to_json(), alerts, board)
        report.graded += 1
        report.alerts += len(alerts)
        for alert in alerts:
            log.info(
                "alert raised",
                extra={"patient": hashed, "alert_id": alert.alert_id, "kind": alert.kind, "grade": alert.grade},
            )

    async def _deliver(self, watched: dict[str, str], report: CycleReport) -> None:
        for alert in self.store.undelivered():
            patient_id = watched.get(alert.patient_hash)
            if patient_id is None:
                report.undelivered += 1  # the patient is no longer watched: kept, not sent
                continue
            if not self._hold_lease():
                log.warning("lease lost before delivery: stopping")
                return
            if await self.sender.deliver(alert, patient_id, extra_log={"patient": alert.patient_hash}):
                report.delivered += 1
            else:
                report.undelivered += 1

    async def _write_back(self, watched: dict[str, str], token: str | None, report: CycleReport) -> None:
        for alert in self.store.pending_writebacks():
            patient_id = watched.get(alert.patient_hash)
            if patient_id is None:
                continue
            body = {**alert.body, "patient": f"Patient/{patient_id}"}
            try:
                resource = build_resource(self.config.writeback, body)
                reference = await write_back(
                    self.client,
                    self.config.fhir_server,
                    resource,
                    access_token=token,
                    timeout_s=self.config.policy.request_timeout_seconds,
                )
            except WritebackError as exc:
                log.warning("write-back failed", extra={"patient": alert.patient_hash, "reason": str(exc)})
                continue
            self.store.record_writeback(alert.alert_id, status=WRITEBACK_DONE, reference=reference)
            report.written_back += 1

    async def run(self, *, once: bool, stop: asyncio.Event, on_cycle: Callable[[CycleReport], None]) -> None:
        """Cycle every ``interval_s`` until ``stop`` is set (or once); the lease is given up at the end."""
        try:
            while not stop.is_set():
                report = await self.cycle()
                on_cycle(report)
                log.info("watch cycle done", extra=report.to_json())
                if once:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.config.interval_s)
        finally:
            with contextlib.suppress(StoreUnavailable):  # the lease then simply expires
                self.release()
