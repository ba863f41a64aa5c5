"""UCUM normalisation: a FHIR Quantity -> a value in the quantity's canonical unit, or a reason.

Units come from ``mappings/units.yaml``. A Quantity whose unit is missing or unknown is not
evidence (clinical-reference.md section 1), so conversion returns a reason, never a guess.
Arithmetic is exact (``Fraction``) so 100.4 [degF] is exactly 38.0 Cel.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds_hooks.reading.terminology import BUILTIN_MAPPINGS_DIR, MappingError, read_yaml_safely

UCUM_SYSTEM = "http://unitsofmeasure.org"

Quantity = Literal["temperature", "pressure", "oxygen_flow", "oxygen_fraction", "saturation", "mass", "drug_mass"]


class _UnitEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str
    offset: str | int | float = 0
    scale: str | int | float = 1
    aliases: tuple[str, ...] = ()


class _QuantityEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    canonical: str
    units: tuple[_UnitEntry, ...]


class _UnitsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: Literal["crs-cds-units/1"] = Field(alias="schema")
    version: str
    quantities: dict[Quantity, _QuantityEntry]


@dataclass(frozen=True, slots=True)
class _Conversion:
    offset: Fraction
    scale: Fraction
    identity: bool = False

    def apply(self, value: int | float) -> float:
        """Exact arithmetic (100.4 [degF] -> 38.0 Cel exactly); the identity skips it."""
        if self.identity:
            return float(value)
        return float((Fraction(str(value)) + self.offset) * self.scale)


class Converted(NamedTuple):
    """A value in canonical units, with the unit it arrived in (shown as evidence).

    A named tuple rather than a frozen dataclass: as immutable, and made for every quantity of
    every resource, where a frozen dataclass's field-by-field ``__init__`` costs several times more.
    """

    value: float
    canonical_unit: str
    original_value: float
    original_unit: str


@dataclass(frozen=True)
class UnitTable:
    """Per quantity: UCUM code -> conversion, and alias -> UCUM code."""

    version: str
    canonical: dict[str, str]
    by_code: dict[str, dict[str, _Conversion]]
    by_alias: dict[str, dict[str, str]]

    def convert(self, quantity: Quantity, raw: object) -> Converted | str:
        """Convert a FHIR Quantity dict, or return why it is not usable."""
        if not isinstance(raw, dict):
            return "no value"
        value = raw.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "value missing or not a number"
        if "comparator" in raw and raw["comparator"] not in (None, ""):
            return f"value has a comparator ({raw.get('comparator')!s}), not an exact measurement"
        code = raw.get("code")
        ucum: str | None = None
        if isinstance(code, str) and code:
            system = raw.get("system")
            if system is not None and system != UCUM_SYSTEM:
                return f"unit code {code!r} is not from UCUM"
            ucum = code
        elif isinstance(unit_text := raw.get("unit"), str) and unit_text.strip():
            ucum = self.by_alias[quantity].get(unit_text.strip())
            if ucum is None:
                return f"unknown unit {unit_text.strip()!r}"
        else:
            return "unit missing"
        conversion = self.by_code[quantity].get(ucum)
        if conversion is None:
            return f"unit {ucum!r} is not a {quantity.replace('_', ' ')} unit"
        canonical_value = float(value) if conversion.identity else conversion.apply(value)
        return Converted(canonical_value, self.canonical[quantity], float(value), ucum)


def _conversion(unit: _UnitEntry) -> _Conversion:
    offset, scale = _fraction(unit.offset), _fraction(unit.scale)
    return _Conversion(offset, scale, identity=offset == 0 and scale == 1)


def _fraction(raw: str | int | float) -> Fraction:
    return Fraction(str(raw)) if not isinstance(raw, str) else Fraction(raw.strip())


def load_units(path: Path = BUILTIN_MAPPINGS_DIR / "units.yaml") -> UnitTable:
    """Read and check the unit table; a bad file stops start-up."""
    try:
        with path.open(encoding="utf-8") as handle:
            parsed = _UnitsFile.model_validate(read_yaml_safely(handle))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"cannot read unit file {path}: {exc}") from exc
    except ValidationError as exc:
        raise MappingError(f"unit file {path} is invalid: {exc.errors()[0]['msg']}") from exc
    by_code: dict[str, dict[str, _Conversion]] = {}
    by_alias: dict[str, dict[str, str]] = {}
    canonical: dict[str, str] = {}
    try:
        for quantity, entry in parsed.quantities.items():
            canonical[quantity] = entry.canonical
            by_code[quantity] = {u.code: _conversion(u) for u in entry.units}
            by_alias[quantity] = {u.code: u.code for u in entry.units}
            for unit in entry.units:
                by_alias[quantity].update({alias: unit.code for alias in unit.aliases})
    except (ValueError, ZeroDivisionError) as exc:
        raise MappingError(f"unit file {path} has a bad offset or scale: {exc}") from exc
    missing = set(Quantity.__args__) - set(by_code)  # type: ignore[attr-defined]
    if missing:
        raise MappingError(f"unit file {path} lacks quantities {sorted(missing)}")
    return UnitTable(parsed.version, canonical, by_code, by_alias)
