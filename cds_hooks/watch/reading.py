"""The watcher's reading of each patient per cycle: only what changed, and in full every so often.

The queries are the hook's own prefetch templates (CRS and, when graded, ICANS), run through the
hook's FHIR client (allow-list, no redirects, bounded time and pages). After a patient's first
full read, each search asks only for what changed since the previous read
(``_lastUpdated=ge<last read - overlap>``) and the answer is merged into the patient's cached
resources by reference (a newer version replaces the older). ``_lastUpdated`` cannot see
deletions, so each patient is re-read in full every ``full_read_s``; the cache lives in memory
only, so a restarted watcher starts with full reads. A query that fails leaves the cache as it was
and the next read asks again from the same point; the failure is passed on as unavailable data,
exactly as the hook would, never as "no data".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cds_hooks.cds import FHIR_ID
from cds_hooks.reading.fhir_client import FhirFetcher
from cds_hooks.reading.fhir_rules import SourcedResource
from cds_hooks.reading.prefetch import PrefetchKey, render
from cds_hooks.reading.record import DataSource

log = logging.getLogger("crs_cds.watch")

LAST_UPDATED_OVERLAP = timedelta(minutes=5)
"""Each incremental search reaches this far before the previous read [choice]: a resource
committed while the previous cycle ran, or a small clock difference with the server, is not missed
(reading it twice is harmless: the merge is by reference)."""


@dataclass
class _Cached:
    resources: dict[str, SourcedResource] = field(default_factory=dict)
    read_at: datetime | None = None
    full_at: datetime | None = None


@dataclass(frozen=True)
class PatientRead:
    resources: list[SourcedResource]
    unavailable: dict[DataSource, str]
    full: bool
    """This cycle read the patient in full."""


class ChartReader:
    """Reads watched patients from one FHIR server, keeping each patient's resources between cycles."""

    def __init__(
        self, fetcher: FhirFetcher, fhir_server: str, keys: Sequence[PrefetchKey], *, full_read: timedelta
    ) -> None:
        self._fetcher = fetcher
        self._base = fhir_server
        self._keys = tuple(keys)
        self._full_read = full_read
        self._cache: dict[str, _Cached] = {}
        self._members: list[str] | None = None

    async def read(self, patient_id: str, *, at: datetime, access_token: str | None) -> PatientRead:
        cached = self._cache.setdefault(patient_id, _Cached())
        full = cached.read_at is None or cached.full_at is None or at - cached.full_at >= self._full_read
        since = None if full or cached.read_at is None else cached.read_at - LAST_UPDATED_OVERLAP
        queries = {key.name: self._query(key, patient_id, since) for key in self._keys}
        results = await self._fetcher.fetch_all(self._base, queries, access_token=access_token)
        unavailable: dict[DataSource, str] = {}
        fetched: list[SourcedResource] = []
        for key in self._keys:
            result = results[key.name]
            fetched.extend(result.resources)
            if result.error is not None:
                unavailable[key.source] = result.error
            elif result.not_found and key.source is DataSource.PATIENT:
                unavailable[key.source] = "the Patient was not found on the FHIR server"
        if unavailable:
            # Keep the last complete picture; what could not be read is said, not guessed.
            merged = {**cached.resources, **{r.reference: r for r in fetched}}
            return PatientRead(list(merged.values()), unavailable, full)
        if full:
            cached.resources = {r.reference: r for r in fetched}
            cached.full_at = at
        else:
            cached.resources.update({r.reference: r for r in fetched})
        cached.read_at = at
        return PatientRead(list(cached.resources.values()), {}, full)

    def _query(self, key: PrefetchKey, patient_id: str, since: datetime | None) -> str:
        query = render(key.template, {"patientId": patient_id})
        if since is None or "?" not in query:
            return query  # a read (Patient/<id>) is always read whole
        return f"{query}&_lastUpdated=ge{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"

    async def group_members(self, group_id: str, *, access_token: str | None) -> list[str]:
        """The Group's active Patient members; on failure the last members read (none at first)."""
        results = await self._fetcher.fetch_all(self._base, {"group": f"Group/{group_id}"}, access_token=access_token)
        result = results["group"]
        group = next((r.resource for r in result.resources if r.resource.get("resourceType") == "Group"), None)
        if result.error is not None or group is None:
            log.warning(
                "watch group unreadable: watching its last known members",
                extra={"read_failed": result.error is not None, "known": len(self._members or [])},
            )
            return list(self._members or [])
        members: list[str] = []
        for member in group.get("member") or []:
            if not isinstance(member, dict) or member.get("inactive") is True:
                continue
            reference = (member.get("entity") or {}).get("reference")
            if isinstance(reference, str) and reference.startswith("Patient/"):
                patient_id = reference.removeprefix("Patient/")
                if FHIR_ID.match(patient_id):
                    members.append(patient_id)
        self._members = list(dict.fromkeys(members))
        return list(self._members)

    def forget(self, keep: Sequence[str]) -> None:
        """Drop the cache of patients no longer watched."""
        for patient_id in [p for p in self._cache if p not in set(keep)]:
            del self._cache[patient_id]
