"""Flatten what a CDS client or a FHIR server sends into resources with stable references.

Accepts a single resource, a Bundle (searchset, collection, ...), or an OperationOutcome (which
marks data as unavailable rather than empty). Resources are de-duplicated by reference, since
prefetch keys and ``_include`` may return the same resource twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_hooks.reading.reader import SourcedResource, reference_of


@dataclass
class Flattened:
    resources: list[SourcedResource] = field(default_factory=list)
    outcome: str | None = None
    """Why the data are unavailable, when the payload is (or holds) an OperationOutcome error."""
    malformed: int = 0
    duplicates: int = 0
    """Resources skipped because their reference was already in ``seen`` (another key had them)."""


def outcome_text(outcome: Mapping[str, Any]) -> str:
    """A short, safe description of an OperationOutcome (first issue's diagnostics or code)."""
    issues = outcome.get("issue")
    if isinstance(issues, list) and issues and isinstance(issues[0], dict):
        issue = issues[0]
        for key in ("diagnostics",):
            if isinstance(issue.get(key), str):
                return str(issue[key])[:200]
        details = issue.get("details")
        if isinstance(details, dict) and isinstance(details.get("text"), str):
            return str(details["text"])[:200]
        if isinstance(issue.get("code"), str):
            return f"OperationOutcome {issue['code']}"
    return "OperationOutcome"


def _is_error_outcome(outcome: Mapping[str, Any]) -> bool:
    issues = outcome.get("issue")
    if not isinstance(issues, list) or not issues:
        return True
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues)


def flatten(payload: object, seen: set[str] | None = None) -> Flattened:
    """Resources from one prefetch value or one server response.

    ``seen`` (references already taken, updated here) drops a resource another prefetch key or
    page already brought, before any further work is done on it: EHRs answer the overlapping
    Observation searches (observations, vitalSigns, oxygenDevices) with the same rows, and
    most rows would otherwise travel through every later stage twice. The first copy wins,
    as in :func:`unique`.
    """
    out = Flattened()
    if not isinstance(payload, dict):
        out.malformed += 1
        return out
    kind = payload.get("resourceType")
    if kind == "OperationOutcome":
        out.outcome = outcome_text(payload)
        return out
    if kind != "Bundle":
        _add(out, payload, None, seen)
        return out
    entries = payload.get("entry", [])
    if not isinstance(entries, list):
        out.malformed += 1
        return out
    taken = seen if seen is not None else set()
    resources = out.resources
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            out.malformed += 1
            continue
        kind = resource.get("resourceType")
        if kind == "OperationOutcome":
            search = entry.get("search")
            if isinstance(search, dict) and search.get("mode") == "outcome" and not _is_error_outcome(resource):
                continue  # warnings/information about the search: not a failure
            out.outcome = outcome_text(resource)
            continue
        # _add, inlined: this loop runs once per resource of every call.
        full_url = entry.get("fullUrl")
        reference = reference_of(resource, full_url if isinstance(full_url, str) else None)
        if reference is None or not isinstance(kind, str):
            out.malformed += 1
        elif seen is None or reference not in taken:
            taken.add(reference)
            resources.append(SourcedResource(resource, reference))
        else:
            out.duplicates += 1
    return out


def _add(out: Flattened, resource: Mapping[str, Any], full_url: object, seen: set[str] | None) -> None:
    reference = reference_of(resource, full_url if isinstance(full_url, str) else None)
    if reference is None or not isinstance(resource.get("resourceType"), str):
        out.malformed += 1
        return
    if seen is not None:
        if reference in seen:
            out.duplicates += 1
            return
        seen.add(reference)
    out.resources.append(SourcedResource(resource, reference))


def resources_of(payloads: Iterable[object]) -> list[SourcedResource]:
    """Every resource of many payloads (the lines of an NDJSON export, Bundles, single
    resources), each reference once, the first copy winning; what is not a resource is skipped.

    A bulk export is one resource per line, so a plain resource is taken here directly, with
    the same rules as :func:`flatten` (a reference and a resource type, or it is not taken), rather
    than through a :class:`Flattened` per line.
    """
    seen: set[str] = set()
    taken: list[SourcedResource] = []
    for payload in payloads:
        kind = payload.get("resourceType") if isinstance(payload, dict) else None
        if kind in ("Bundle", "OperationOutcome") or not isinstance(payload, dict):
            taken.extend(flatten(payload, seen).resources)
            continue
        reference = reference_of(payload)
        if reference is None or not isinstance(kind, str) or reference in seen:
            continue
        seen.add(reference)
        taken.append(SourcedResource(payload, reference))
    return taken


def unique(resources: Iterable[SourcedResource]) -> list[SourcedResource]:
    """Each reference once (the first copy wins)."""
    seen: dict[str, SourcedResource] = {}
    for item in resources:
        seen.setdefault(item.reference, item)
    return list(seen.values())
