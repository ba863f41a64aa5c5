"""The public vignettes as FHIR bundle fixtures with their expected grades."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def vignette_ids() -> list[str]:
    return sorted(p.name.split(".")[0] for p in (FIXTURES / "vignettes").glob("V*.bundle.json"))


def vignette_bundle(vignette_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "vignettes" / f"{vignette_id}.bundle.json").read_text())
    return data


def vignette_expected() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads((FIXTURES / "vignettes" / "expected.json").read_text())
    return data
