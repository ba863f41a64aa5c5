"""Per-product rules as data: ``mappings/products/*.yaml``, one file per product family.

What the order checks need to know about each CRS-causing product (a T-cell engager or a cell
therapy): its class, when its label says to hold a dose, which premedication it asks for and how
long before, and the monitoring it needs. Each rule carries its label source and date, and
``verified: false`` when it was taken from a public restatement rather than the current US label:
the cards say so. A site updates a rule by editing the file, not the code.

The files are validated once at start-up; a broken file, an unknown agent or a product without a
rule raises :class:`ProductRulesError` and the service refuses to start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cds_hooks.reading.terminology import BUILTIN_MAPPINGS_DIR, MedicationRole, Terminology

PRODUCTS_DIR = BUILTIN_MAPPINGS_DIR / "products"
PREMEDICATION_ROLES = frozenset(
    {MedicationRole.CORTICOSTEROID, MedicationRole.ANTIHISTAMINE, MedicationRole.ANTIPYRETIC}
)

ProductClass = Literal["car-t", "t-cell-engager"]
InfectionIndicator = Literal["warning", "critical"]


class ProductRulesError(Exception):
    """A product rule file is missing, malformed, or names an agent the terminology lacks."""


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field(min_length=1)
    """The document the rule is read from (label name and section, or the restatement)."""
    date: str = Field(pattern=r"^\d{4}(-\d{2}){0,2}$")
    """The label's revision date (or the restatement's), YYYY[-MM[-DD]]."""
    verified: bool
    """False when taken from a public restatement and not checked against the current US label."""


class _Hold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    crs_min_grade: int = Field(ge=1, le=4)
    icans_min_grade: int = Field(ge=1, le=4)
    fever: bool
    """A temperature >= 38.0 degC in the fever window holds the dose too (CRS may be starting)."""
    resolved_for_hours: float | None = Field(default=None, gt=0, le=720)
    """After a CRS episode, the next dose only once it has been resolved this long (glofitamab
    72 h); an unresolved or too recent episode holds the dose."""
    text: str = Field(min_length=1)
    """The label's words, shown on the card."""


class _SteroidProphylaxis(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stance: Literal["allowed", "avoid"]
    """What the label says of a prophylactic corticosteroid ordered with the product."""
    text: str = Field(min_length=1)


class _Premedication(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: tuple[MedicationRole, ...]
    window_before_h: float = Field(gt=0, le=24)
    """Premedication given within this many hours before the dose counts (or ordered with it)."""
    doses: str = Field(min_length=1)
    """Which doses need it (``each step-up dose``, ``cycle 1``...), shown on the card."""
    required_doses: int | None = Field(default=None, ge=1, le=50)
    """The label asks for premedication before the first N doses (step-up and first treatment
    doses); None: before every dose. Later doses get an info card, not a warning."""
    text: str = Field(min_length=1)


class _Product(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    product_class: ProductClass = Field(alias="class")
    source: _Source
    hold: _Hold | None = None
    """None: the order checks raise no hold card for this product (cell therapies)."""
    infection_indicator: InfectionIndicator
    infection_text: str = Field(min_length=1)
    premedication: _Premedication
    monitoring: tuple[str, ...] = Field(min_length=1)
    steroid_prophylaxis: _SteroidProphylaxis | None = None
    """Cell therapies: a corticosteroid with the infusion is a choice the label allows or advises against."""


class _ProductFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: Literal["crs-cds-products/1"] = Field(alias="schema")
    family: str = Field(min_length=1)
    version: str
    products: tuple[_Product, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class LabelSource:
    label: str
    date: str
    verified: bool

    @property
    def cite(self) -> str:
        check = "" if self.verified else "; not verified against the current US label"
        return f"{self.label}, {self.date}{check}"


@dataclass(frozen=True, slots=True)
class HoldRule:
    crs_min_grade: int
    icans_min_grade: int
    fever: bool
    text: str
    resolved_for: timedelta | None = None


@dataclass(frozen=True, slots=True)
class SteroidProphylaxis:
    stance: Literal["allowed", "avoid"]
    text: str


@dataclass(frozen=True, slots=True)
class PremedicationRule:
    roles: tuple[MedicationRole, ...]
    window_before: timedelta
    doses: str
    text: str
    required_doses: int | None = None


@dataclass(frozen=True, slots=True)
class ProductRule:
    """Everything the order checks apply to one CRS-causing product, with its source."""

    agent: str
    family: str
    product_class: ProductClass
    source: LabelSource
    hold: HoldRule | None
    infection_indicator: InfectionIndicator
    infection_text: str
    premedication: PremedicationRule
    monitoring: tuple[str, ...]
    steroid_prophylaxis: SteroidProphylaxis | None = None


@dataclass(frozen=True)
class ProductRules:
    """Rules by agent id; ``versions`` by family file, for the evidence trail."""

    by_agent: Mapping[str, ProductRule]
    versions: Mapping[str, str]

    def rule_for(self, agent: str) -> ProductRule | None:
        return self.by_agent.get(agent)


def _parse(path: Path) -> _ProductFile:
    try:
        with path.open(encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as exc:
        raise ProductRulesError(f"cannot read product rules {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ProductRulesError(f"product rules {path} are not valid YAML: {exc}") from exc
    try:
        return _ProductFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProductRulesError(f"product rules {path} are invalid at {where}: {first['msg']}") from exc


def load_products(terminology: Terminology, *, directory: Path = PRODUCTS_DIR) -> ProductRules:
    """Every ``*.yaml`` in ``directory``; each agent must be a ``crs_therapy`` concept, named once,
    and every ``crs_therapy`` concept must have a rule (a product without one would go unchecked)."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ProductRulesError(f"no product rule files in {directory}")
    by_agent: dict[str, ProductRule] = {}
    versions: dict[str, str] = {}
    for path in files:
        parsed = _parse(path)
        versions[parsed.family] = parsed.version
        for entry in parsed.products:
            concept = terminology.concepts.get(entry.agent)
            if concept is None or concept.role is not MedicationRole.CRS_THERAPY:
                raise ProductRulesError(f"{path}: {entry.agent!r} is not a crs_therapy medication concept")
            if entry.agent in by_agent:
                raise ProductRulesError(f"{path}: {entry.agent!r} has a rule in two files")
            extra = set(entry.premedication.roles) - PREMEDICATION_ROLES
            if extra:
                raise ProductRulesError(f"{path}: {entry.agent!r} premedication role {sorted(extra)} is not one")
            by_agent[entry.agent] = _rule(entry, parsed.family)
    unruled = sorted(
        c.id for c in terminology.concepts.values() if c.role is MedicationRole.CRS_THERAPY and c.id not in by_agent
    )
    if unruled:
        raise ProductRulesError(f"CRS-causing products without a rule in {directory}: {', '.join(unruled)}")
    return ProductRules(by_agent, versions)


def _rule(entry: _Product, family: str) -> ProductRule:
    hold = entry.hold
    premed = entry.premedication
    return ProductRule(
        agent=entry.agent,
        family=family,
        product_class=entry.product_class,
        source=LabelSource(entry.source.label, entry.source.date, entry.source.verified),
        hold=HoldRule(
            hold.crs_min_grade,
            hold.icans_min_grade,
            hold.fever,
            hold.text,
            timedelta(hours=hold.resolved_for_hours) if hold.resolved_for_hours is not None else None,
        )
        if hold
        else None,
        infection_indicator=entry.infection_indicator,
        infection_text=entry.infection_text,
        premedication=PremedicationRule(
            premed.roles, timedelta(hours=premed.window_before_h), premed.doses, premed.text, premed.required_doses
        ),
        monitoring=entry.monitoring,
        steroid_prophylaxis=(
            SteroidProphylaxis(entry.steroid_prophylaxis.stance, entry.steroid_prophylaxis.text)
            if entry.steroid_prophylaxis is not None
            else None
        ),
    )
