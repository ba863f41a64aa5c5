"""Invariants every CDS Hooks response must keep, checked the way an EHR's parser would."""

from __future__ import annotations

import importlib
from typing import Any

EMPTY: tuple[Any, ...] = (None, "", [], {})


def empty_values(value: Any, path: str = "$") -> list[str]:
    """Paths of null or empty values (CDS Hooks forbids them, except ``{"cards": []}``)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}"
            if child == "$.cards" and item == []:
                continue
            if any(item is e or item == e for e in EMPTY) and not isinstance(item, bool | int | float):
                found.append(child)
            else:
                found.extend(empty_values(item, child))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(empty_values(item, f"{path}[{index}]"))
    return found


def validate_r4(resource: dict[str, Any]) -> None:
    """Raise if the resource is not valid FHIR R4 (R4B models)."""
    kind = resource["resourceType"]
    module = importlib.import_module(f"fhir.resources.R4B.{kind.lower()}")
    getattr(module, kind).model_validate(resource)


def check_card(card: dict[str, Any]) -> None:
    """The card rules of CDS Hooks 2.0 this service promises (cds-hooks-checklist.md)."""
    assert card["uuid"]
    assert 0 < len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"]
    suggestions = card.get("suggestions", [])
    if suggestions:
        assert card["selectionBehavior"] in ("at-most-one", "any")
        if card["selectionBehavior"] == "at-most-one":
            assert sum(1 for s in suggestions if s.get("isRecommended")) <= 1
    for suggestion in suggestions:
        assert suggestion["label"] and suggestion["uuid"]
        for action in suggestion["actions"]:
            assert action["type"] in ("create", "update", "delete")
            assert action["description"]
            if action["type"] in ("create", "update"):
                validate_r4(action["resource"])
    for reason in card.get("overrideReasons", []):
        assert reason["code"] and reason["display"]
    for link in card.get("links", []):
        assert link["type"] in ("absolute", "smart") and link["url"] and link["label"]
        if link["type"] == "absolute":
            assert "appContext" not in link
