"""UCUM normalisation: a FHIR Quantity -> a value in the quantity's canonical unit, or a reason.

Units come from ``mappings/units.yaml``. A Quantity whose unit is missing or unknown is not
evidence (clinical-reference.md section 1), so conversion returns a reason, never a guess.
Arithmetic is exact (``Fraction``) so 100.4 [degF] is exactly 38.0 Cel.

UCUM is case-sensitive and has several spellings for some units (the litre is ``l`` and ``L``;
``L/min`` is also ``L.min-1``): every spelling UCUM defines for a unit in use is listed in the
table (``ucum``) and accepted as a code, each converted as its unit; a spelling UCUM does not
define (``degF``, ``mmHg``) is accepted only as display text when no code is given. A hand table
rather than a UCUM library: a dozen spellings, exact arithmetic, and nothing to load at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds_hooks.reading.terminology import BUILTIN_MAPPINGS_DIR, MEMO_LIMIT, MappingError, read_yaml_safely

UCUM_SYSTEM = "http://unitsofmeasure.org"

Quantity = Literal["temperature", "pressure", "oxygen_flow", "oxygen_fraction", "saturation", "mass", "drug_mass"]


class _UnitEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str
    """The spelling shown as the unit the value arrived in, and matched as Quantity.code."""
    offset: str | int | float = 0
    scale: str | int | float = 1
    ucum: tuple[str, ...] = ()
    """Other UCUM spellings of the same unit (case-sensitive), also matched as Quantity.code."""
    aliases: tuple[str, ...] = ()
    """Display texts (Quantity.unit) accepted only when Quantity.code is absent."""


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


_Unit = tuple[_Conversion, str, str]
"""How a Quantity's unit converts: the conversion, the canonical unit, the UCUM code it arrived in."""


@dataclass(frozen=True)
class UnitTable:
    """Per quantity: UCUM code -> conversion, and alias -> UCUM code."""

    version: str
    canonical: dict[str, str]
    by_code: dict[str, dict[str, _Conversion]]
    by_alias: dict[str, dict[str, str]]
    _memo: dict[tuple[object, ...], _Unit | str] = field(default_factory=dict, compare=False, repr=False)
    """(quantity, code, system, unit) -> how that unit converts, or why it cannot: a chart spells
    the same few units over and over."""

    def convert(self, quantity: Quantity, raw: object) -> Converted | str:
        """Convert a FHIR Quantity dict, or return why it is not usable."""
        if not isinstance(raw, dict):
            return "no value"
        value = raw.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "value missing or not a number"
        if "comparator" in raw and raw["comparator"] not in (None, ""):
            return f"value has a comparator ({raw.get('comparator')!s}), not an exact measurement"
        key = (quantity, raw.get("code"), raw.get("system"), raw.get("unit"))
        try:
            unit = self._memo[key]
        except KeyError:
            unit = self._unit(quantity, key[1], key[2], key[3])
            if _memorable(key):
                if len(self._memo) > MEMO_LIMIT:
                    self._memo.clear()
                self._memo[key] = unit
        except TypeError:  # an unhashable code, system or unit (malformed JSON): not cached
            unit = self._unit(quantity, key[1], key[2], key[3])
        if isinstance(unit, str):
            return unit
        conversion, canonical, ucum = unit
        canonical_value = float(value) if conversion.identity else conversion.apply(value)
        return _new_converted(Converted, (canonical_value, canonical, float(value), ucum))

    def _unit(self, quantity: Quantity, code: object, system: object, unit_text: object) -> _Unit | str:
        """The unit a Quantity's code (UCUM), else its display text (an alias), names."""
        ucum: str | None = None
        if isinstance(code, str) and code:
            if system is not None and system != UCUM_SYSTEM:
                return f"unit code {code!r} is not from UCUM"
            ucum = code
        elif isinstance(unit_text, str) and unit_text.strip():
            ucum = self.by_alias[quantity].get(unit_text.strip())
            if ucum is None:
                return f"unknown unit {unit_text.strip()!r}"
        else:
            return "unit missing"
        conversion = self.by_code[quantity].get(ucum)
        if conversion is None:
            return f"unit {ucum!r} is not {_with_article(quantity.replace('_', ' '))} unit"
        return conversion, self.canonical[quantity], ucum


_new_converted = tuple.__new__
"""``Converted(...)`` without the named tuple's Python-level ``__new__`` (one per value read)."""


def _with_article(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


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
            by_code[quantity] = {}
            by_alias[quantity] = {}
            for unit in entry.units:
                conversion = _conversion(unit)
                for spelling in (unit.code, *unit.ucum):
                    if spelling in by_code[quantity]:
                        raise MappingError(f"unit file {path}: {spelling!r} is listed twice for {quantity}")
                    by_code[quantity][spelling] = conversion
                    by_alias[quantity][spelling] = spelling
            for unit in entry.units:
                by_alias[quantity].update(
                    {alias: unit.code for alias in unit.aliases if alias not in by_alias[quantity]}
                )
    except (ValueError, ZeroDivisionError) as exc:
        raise MappingError(f"unit file {path} has a bad offset or scale: {exc}") from exc
    missing = set(Quantity.__args__) - set(by_code)  # type: ignore[attr-defined]
    if missing:
        raise MappingError(f"unit file {path} lacks quantities {sorted(missing)}")
    return UnitTable(parsed.version, canonical, by_code, by_alias)


MEMO_KEY_CHARS = 256
"""Only short unit spellings are remembered: a client's strings of any length never stay in
memory across calls (real UCUM codes, systems and display units are far shorter)."""


def _memorable(key: tuple[object, ...]) -> bool:
    return all(part is None or (isinstance(part, str) and len(part) <= MEMO_KEY_CHARS) for part in key)
