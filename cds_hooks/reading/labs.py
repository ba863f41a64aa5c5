"""Laboratory Observations: codes and units as data (``mappings/labs.yaml``), read like vitals.

A lab value is evidence under the same rules as a vital sign (``fhir_rules``: status, patient,
time); its unit is converted to the lab's canonical unit or the value is not evidence, and its
reference range is kept (converted alike) because the ISTH DIC score measures PT and D-dimer
against the laboratory's own normal (clinical-reference.md section 6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds_hooks.reading.terminology import BUILTIN_MAPPINGS_DIR, MappingError, read_yaml_safely
from cds_hooks.reading.units import UCUM_SYSTEM


class _LabUnit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str
    scale: str | int | float = 1
    aliases: tuple[str, ...] = ()


class _LabCode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system: str
    code: str
    display: str
    verified: Literal["code-in-use", "verified"]
    """``verified``: in codes.csv with status verified; ``code-in-use``: section 6 only."""


class _LabEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    display: str
    asco: bool
    canonical: str
    units: tuple[_LabUnit, ...]
    codes: tuple[_LabCode, ...]


class _LabsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: Literal["crs-cds-labs/1"] = Field(alias="schema")
    version: str
    labs: tuple[_LabEntry, ...]


@dataclass(frozen=True, slots=True)
class LabDefinition:
    """One mapped lab: its id (``crp``), name, canonical unit, and whether ASCO lists it."""

    id: str
    display: str
    canonical_unit: str
    asco: bool
    scales: Mapping[str, Fraction]
    """UCUM code -> factor to the canonical unit."""
    aliases: Mapping[str, str]
    """Quantity.unit text -> UCUM code, for a Quantity without a code."""


@dataclass(frozen=True, slots=True)
class LabValue:
    """A Quantity converted to the lab's canonical unit, with what was charted."""

    value: float
    original: str


@dataclass(frozen=True)
class LabTable:
    """The mapped labs, by id and by (system, code)."""

    version: str
    labs: Mapping[str, LabDefinition]
    by_code: Mapping[tuple[str, str], str]

    def match(self, concept: object) -> LabDefinition | None:
        """The lab an Observation.code names, or None (not a mapped lab)."""
        if not isinstance(concept, dict):
            return None
        found = concept.get("coding")
        if not isinstance(found, list):
            return None
        for coding in found:
            if isinstance(coding, dict):
                lab_id = self.by_code.get((str(coding.get("system")), str(coding.get("code"))))
                if lab_id is not None:
                    return self.labs[lab_id]
        return None

    def codes(self) -> list[tuple[str, str]]:
        """Every mapped (system, code), for the prefetch search."""
        return list(self.by_code)

    def convert(self, lab: LabDefinition, raw: object) -> LabValue | str:
        """A FHIR Quantity in the lab's canonical unit, or why it is not usable."""
        if not isinstance(raw, dict):
            return "no value"
        value = raw.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "value missing or not a number"
        if raw.get("comparator") not in (None, ""):
            return f"value has a comparator ({raw.get('comparator')!s}), not an exact measurement"
        code = raw.get("code")
        if isinstance(code, str) and code:
            system = raw.get("system")
            if system is not None and system != UCUM_SYSTEM:
                return f"unit code {code!r} is not from UCUM"
            ucum = code
        elif isinstance(text := raw.get("unit"), str) and text.strip():
            alias = lab.aliases.get(text.strip())
            if alias is None:
                return f"unknown unit {text.strip()!r} for {lab.display}"
            ucum = alias
        else:
            return "unit missing"
        scale = lab.scales.get(ucum)
        if scale is None:
            return f"unit {ucum!r} is not a {lab.display} unit ({', '.join(lab.scales)})"
        converted = float(value) if scale == 1 else float(Fraction(str(value)) * scale)
        return LabValue(converted, f"{value:g} {ucum}")

    def reference_range(self, lab: LabDefinition, ranges: object) -> tuple[float | None, float | None]:
        """The first referenceRange's low and high in canonical units; an unusable bound is None."""
        if not isinstance(ranges, list) or not ranges or not isinstance(ranges[0], dict):
            return None, None
        bounds: list[float | None] = []
        for side in ("low", "high"):
            converted = self.convert(lab, ranges[0].get(side))
            bounds.append(converted.value if isinstance(converted, LabValue) else None)
        return bounds[0], bounds[1]


def _fraction(raw: str | int | float) -> Fraction:
    return Fraction(raw.strip()) if isinstance(raw, str) else Fraction(str(raw))


def load_labs(path: Path = BUILTIN_MAPPINGS_DIR / "labs.yaml") -> LabTable:
    """Read and check the lab table; a bad file stops start-up (as every mapping does)."""
    try:
        with path.open(encoding="utf-8") as handle:
            parsed = _LabsFile.model_validate(read_yaml_safely(handle))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"cannot read lab file {path}: {exc}") from exc
    except ValidationError as exc:
        raise MappingError(f"lab file {path} is invalid: {exc.errors()[0]['msg']}") from exc
    labs: dict[str, LabDefinition] = {}
    by_code: dict[tuple[str, str], str] = {}
    try:
        for entry in parsed.labs:
            scales = {unit.code: _fraction(unit.scale) for unit in entry.units}
            aliases = {unit.code: unit.code for unit in entry.units}
            for unit in entry.units:
                aliases.update({alias: unit.code for alias in unit.aliases})
            labs[entry.id] = LabDefinition(entry.id, entry.display, entry.canonical, entry.asco, scales, aliases)
            for code in entry.codes:
                if (code.system, code.code) in by_code:
                    raise MappingError(f"lab file {path}: {code.system}|{code.code} is mapped twice")
                by_code[(code.system, code.code)] = entry.id
    except (ValueError, ZeroDivisionError) as exc:
        raise MappingError(f"lab file {path} has a bad scale: {exc}") from exc
    return LabTable(parsed.version, labs, by_code)


@cache
def builtin_labs() -> LabTable:
    """The shipped lab table, read once per process."""
    return load_labs()


def lab_codes_query(table: LabTable) -> str:
    """``system|code,...`` for a FHIR ``code`` search parameter."""
    return ",".join(f"{system}|{code}" for system, code in table.codes())


__all__ = ["LabDefinition", "LabTable", "LabValue", "builtin_labs", "lab_codes_query", "load_labs"]
