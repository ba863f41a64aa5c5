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


def flatten(payload: object) -> Flattened:
    """Resources from one prefetch value or one server response."""
    out = Flattened()
    if not isinstance(payload, dict):
        out.malformed += 1
        return out
    kind = payload.get("resourceType")
    if kind == "OperationOutcome":
        out.outcome = outcome_text(payload)
        return out
    if kind != "Bundle":
        _add(out, payload, None)
        return out
    entries = payload.get("entry", [])
    if not isinstance(entries, list):
        out.malformed += 1
        return out
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            out.malformed += 1
            continue
        resource = entry["resource"]
        if resource.get("resourceType") == "OperationOutcome":
            search = entry.get("search")
            if isinstance(search, dict) and search.get("mode") == "outcome" and not _is_error_outcome(resource):
                continue  # warnings/information about the search: not a failure
            out.outcome = outcome_text(resource)
            continue
        _add(out, resource, entry.get("fullUrl"))
    return out


def _add(out: Flattened, resource: Mapping[str, Any], full_url: object) -> None:
    reference = reference_of(resource, full_url if isinstance(full_url, str) else None)
    if reference is None or not isinstance(resource.get("resourceType"), str):
        out.malformed += 1
        return
    out.resources.append(SourcedResource(resource, reference))


def unique(resources: Iterable[SourcedResource]) -> list[SourcedResource]:
    """Each reference once (the first copy wins)."""
    seen: dict[str, SourcedResource] = {}
    for item in resources:
        seen.setdefault(item.reference, item)
    return list(seen.values())
