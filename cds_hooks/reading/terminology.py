"""Terminology as data: load ``mappings/*.yaml`` into a frozen (system, code) -> concept index.

Codes live in data files so a site can add its local codes without a code change. The files are
validated once at start-up; a broken file raises :class:`MappingError` and the service refuses to
start (a silent fall-back would grade with half a vocabulary).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


def _builtin_mappings_dir() -> Path:
    # Installed wheel: mappings/ is packaged inside cds_hooks/; source tree: beside it.
    packaged = Path(__file__).resolve().parents[1] / "mappings"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "mappings"


BUILTIN_MAPPINGS_DIR = _builtin_mappings_dir()
"""The mapping files shipped with the service (packaged into the wheel, see pyproject)."""

MAPPING_FILES = (
    "observations.yaml",
    "oxygen-support.yaml",
    "medications.yaml",
    "conditions.yaml",
    "icans.yaml",
    "routes.yaml",
)


MEMO_LIMIT = 50_000
"""Bound on remembered lookups, so arbitrary codes from clients cannot grow memory without end."""


class MappingError(Exception):
    """A mapping file is missing, malformed, or contradicts another one."""


class ConceptKind(StrEnum):
    OBSERVATION = "observation"
    OXYGEN_SUPPORT = "oxygen_support"
    MEDICATION = "medication"
    CONDITION = "condition"
    LABORATORY = "laboratory"
    """Laboratory results the order checks read (blood culture); never graded."""
    INFECTION = "infection"
    """Condition codes and names that signal an active infection (order checks)."""
    NEUROLOGIC = "neurologic"
    """ICANS assessments (Observation codes) and their coded answers (``icans.py``)."""
    ROUTE = "route"
    """Routes of administration: whether a vasoactive drug is vasopressor support."""


class MedicationRole(StrEnum):
    VASOPRESSOR = "vasopressor"
    VASOPRESSIN_ANALOGUE = "vasopressin_analogue"
    INOTROPE = "inotrope"
    VASOACTIVE_NOT_COUNTED = "vasoactive_not_counted"
    ANTI_CYTOKINE = "anti_cytokine"
    CORTICOSTEROID = "corticosteroid"
    ANTIPYRETIC = "antipyretic"
    ANTIHISTAMINE = "antihistamine"
    OXYGEN = "oxygen"
    CRS_THERAPY = "crs_therapy"


OBSERVATION_CONCEPTS = frozenset(
    {
        "body_temperature",
        "blood_pressure_panel",
        "systolic_blood_pressure",
        "diastolic_blood_pressure",
        "mean_arterial_pressure",
        "oxygen_saturation",
        "oxygen_saturation_on_room_air",
        "oxygen_flow",
        "inspired_oxygen",
        "body_weight",
        "average_blood_pressure",
    }
)
"""Observation concepts the extractor understands; a mapping may not invent others."""

OXYGEN_SUPPORT_CONCEPTS = frozenset(
    {
        "room_air",
        "nasal_cannula",
        "blow_by",
        "low_flow",
        "high_flow_nasal_cannula",
        "face_mask",
        "positive_pressure",
        "oxygen_unspecified",
    }
)
CONDITION_CONCEPTS = frozenset({"cytokine_release_syndrome"})
LABORATORY_CONCEPTS = frozenset({"blood_culture"})
INFECTION_CONCEPTS = frozenset({"active_infection"})
ROUTE_CONCEPTS = frozenset({"vascular_route", "non_vascular_route"})
"""Vascular (intravenous, intraosseous): vasopressor support; non-vascular: not (eye drops...)."""
NEUROLOGIC_CONCEPTS = frozenset(
    {
        # Observation codes: what was assessed (no LOINC code exists for ICE or CAPD).
        "ice_score",
        "capd_score",
        "level_of_consciousness",
        "seizure",
        "motor_weakness",
        "cerebral_edema",
        "glasgow_coma_score",
        # Coded answers (valueCodeableConcept); their ASTCT grade is fixed in grading/icans.py.
        "loc_alert",
        "loc_awakens_spontaneously",
        "loc_awakens_to_voice",
        "loc_awakens_to_tactile",
        "loc_unarousable",
        "seizure_none",
        "seizure_rapidly_resolving",
        "seizure_nonconvulsive_resolved",
        "seizure_prolonged",
        "seizure_repetitive",
        "motor_none",
        "motor_deep_focal_weakness",
        "edema_none",
        "edema_focal",
        "edema_diffuse",
        "posturing",
        "cranial_nerve_vi_palsy",
        "papilledema",
        "cushings_triad",
    }
)
"""ICANS concepts ``icans.py`` understands; a site maps its own codes to these ids."""


class _CodeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(min_length=1)
    code: str | None = Field(default=None, min_length=1)
    code_prefix: str | None = Field(default=None, min_length=2)
    display: str | None = None
    verified: bool = True

    @model_validator(mode="after")
    def _exactly_one_code(self) -> _CodeEntry:
        if (self.code is None) == (self.code_prefix is None):
            raise ValueError("give exactly one of 'code' or 'code_prefix'")
        return self


class _ConceptEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: ConceptKind
    role: MedicationRole | None = None
    names: tuple[str, ...] = ()
    us_suffix: bool = False
    """Names may carry the FDA's four-letter suffix of biological products (``teclistamab-cqyv``,
    ``tocilizumab-aazg``): a biosimilar or suffixed product is the same agent."""
    codes: tuple[_CodeEntry, ...] = ()

    @model_validator(mode="after")
    def _role_matches_kind(self) -> _ConceptEntry:
        if self.kind is ConceptKind.MEDICATION and self.role is None:
            raise ValueError(f"medication concept {self.id!r} needs a role")
        if self.kind is not ConceptKind.MEDICATION and self.role is not None:
            raise ValueError(f"only medication concepts carry a role ({self.id!r})")
        allowed = {
            ConceptKind.OBSERVATION: OBSERVATION_CONCEPTS,
            ConceptKind.OXYGEN_SUPPORT: OXYGEN_SUPPORT_CONCEPTS,
            ConceptKind.CONDITION: CONDITION_CONCEPTS,
            ConceptKind.LABORATORY: LABORATORY_CONCEPTS,
            ConceptKind.INFECTION: INFECTION_CONCEPTS,
            ConceptKind.NEUROLOGIC: NEUROLOGIC_CONCEPTS,
            ConceptKind.ROUTE: ROUTE_CONCEPTS,
        }.get(self.kind)
        if allowed is not None and self.id not in allowed:
            raise ValueError(f"unknown {self.kind.value} concept {self.id!r}; known: {sorted(allowed)}")
        return self


class _MappingFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: Literal["crs-cds-mapping/1"] = Field(alias="schema")
    name: str
    version: str
    concepts: tuple[_ConceptEntry, ...]


@dataclass(frozen=True, slots=True)
class Concept:
    """A clinical concept the grading reasons about (e.g. ``norepinephrine``, ``face_mask``)."""

    id: str
    kind: ConceptKind
    role: MedicationRole | None = None
    names: tuple[str, ...] = ()
    us_suffix: bool = False
    """Names match with an FDA four-letter suffix too (biological products)."""


@dataclass(frozen=True, slots=True)
class CodeMatch:
    """A concept found for a coding, with how it was found (for the evidence trail)."""

    concept: Concept
    system: str
    code: str
    verified: bool
    by_text: bool = False


@dataclass(frozen=True)
class Terminology:
    """The frozen index built from every mapping file; lookups are dict hits."""

    versions: Mapping[str, str]
    concepts: Mapping[str, Concept]
    _by_code: Mapping[tuple[str, str], tuple[Concept, bool]]
    _by_prefix: Mapping[str, tuple[tuple[str, Concept, bool], ...]]
    _by_name: Mapping[ConceptKind, tuple[tuple[re.Pattern[str], Concept], ...]]
    _exact_names: Mapping[ConceptKind, Mapping[str, Concept]] = field(default_factory=dict)
    _memo: dict[tuple[str, str], CodeMatch | None] = field(default_factory=dict, compare=False, repr=False)
    """Raw (system, code) -> match, misses included: charts repeat the same few codes."""

    def lookup(self, system: object, code: object) -> CodeMatch | None:
        """The concept for one coding, exact code first, then the longest code prefix."""
        if not isinstance(system, str) or not isinstance(code, str):
            return None
        key = (system, code)
        if key in self._memo:
            return self._memo[key]
        if len(self._memo) > MEMO_LIMIT:
            self._memo.clear()
        found = self._lookup(system, code)
        self._memo[key] = found
        return found

    def _lookup(self, system: str, code: str) -> CodeMatch | None:
        system_key = _normalise_system(system)
        code_key = code.strip()
        hit = self._by_code.get((system_key, code_key))
        if hit is not None:
            return CodeMatch(hit[0], system_key, code_key, hit[1])
        for prefix, concept, verified in self._by_prefix.get(system_key, ()):
            if code_key.startswith(prefix):
                return CodeMatch(concept, system_key, code_key, verified)
        return None

    def lookup_codings(self, codings: object, kind: ConceptKind) -> CodeMatch | None:
        """The first coding of ``kind`` in a CodeableConcept's ``coding`` list.

        Every coding of every resource passes here, so a code seen before is one dict hit in
        this loop (no call into :meth:`lookup`).
        """
        if not isinstance(codings, list):
            return None
        memo = self._memo
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            key = (system, code)
            match = memo[key] if key in memo else self.lookup(system, code)
            if match is not None and match.concept.kind is kind:
                return match
        return None

    def maps_any(self, codings: object) -> bool:
        """Whether any coding of a ``coding`` list maps to a concept of any kind (memoised like
        :meth:`lookup_codings`): the reader's cheap test for resources no rule reads."""
        if not isinstance(codings, list):
            return False
        for coding in codings:
            if isinstance(coding, dict) and self.lookup(coding.get("system"), coding.get("code")) is not None:
                return True
        return False

    def lookup_name_in_text(self, text: object, kind: ConceptKind) -> CodeMatch | None:
        """Last resort: a concept name as a whole word in free text (reported as text-based)."""
        if not isinstance(text, str) or not text.strip():
            return None
        for pattern, concept in self._by_name.get(kind, ()):
            if pattern.search(text):
                return CodeMatch(concept, "text", text.strip(), verified=False, by_text=True)
        return None

    def lookup_exact_name(self, text: object, kind: ConceptKind) -> CodeMatch | None:
        """A value whose whole text is a concept name (``"room air"``), for coded-value fields."""
        if not isinstance(text, str):
            return None
        key = " ".join(text.lower().split())
        concept = self._exact_names.get(kind, {}).get(key)
        if concept is None:
            return None
        return CodeMatch(concept, "text", text.strip(), verified=False, by_text=True)

    def codes_for(self, *concept_ids: str) -> list[tuple[str, str]]:
        """Every exact (system, code) mapped to these concepts, for prefetch queries."""
        wanted = set(concept_ids)
        return sorted(key for key, (concept, _) in self._by_code.items() if concept.id in wanted)

    def concepts_of_kind(self, kind: ConceptKind) -> list[str]:
        return sorted(c.id for c in self.concepts.values() if c.kind is kind)


def _normalise_system(system: str) -> str:
    return system.strip().rstrip("/")


SAFE_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML was built with it (same safe constructors, same values), else
the pure-Python one: the mappings load at every start, and the C parser reads them ~10x faster."""


def read_yaml_safely(handle: Any) -> Any:
    """``yaml.safe_load`` through :data:`SAFE_YAML_LOADER` (never the unsafe full loader)."""
    return yaml.load(handle, Loader=SAFE_YAML_LOADER)  # noqa: S506 (a safe loader, chosen above)


def _read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as handle:
            return read_yaml_safely(handle)
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise MappingError(f"mapping file {path} is not valid YAML: {exc}") from exc


def _parse(path: Path) -> _MappingFile:
    try:
        return _MappingFile.model_validate(_read_yaml(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MappingError(f"mapping file {path} is invalid at {where}: {first['msg']}") from exc


def load_terminology(extra_files: Sequence[Path] = (), *, mappings_dir: Path = BUILTIN_MAPPINGS_DIR) -> Terminology:
    """Load the built-in mapping files, then each site file, into one checked index.

    A site file may add codes to an existing concept (same id and kind, same role) or define
    a new medication concept. A code mapped to two different concepts is an error.
    """
    files = [mappings_dir / name for name in MAPPING_FILES] + list(extra_files)
    concepts: dict[str, Concept] = {}
    by_code: dict[tuple[str, str], tuple[Concept, bool]] = {}
    prefixes: dict[str, list[tuple[str, Concept, bool]]] = {}
    names: dict[ConceptKind, list[tuple[str, Concept]]] = {}
    versions: dict[str, str] = {}
    for path in files:
        parsed = _parse(path)
        versions[parsed.name] = parsed.version
        for entry in parsed.concepts:
            concept = _merge_concept(concepts, entry, path)
            for code in entry.codes:
                system = _normalise_system(code.system)
                if code.code is not None:
                    key = (system, code.code.strip())
                    previous = by_code.get(key)
                    if previous is not None and previous[0].id != concept.id:
                        raise MappingError(
                            f"{path}: {system}|{code.code} is mapped to both {previous[0].id!r} and {concept.id!r}"
                        )
                    by_code[key] = (concept, code.verified)
                elif code.code_prefix is not None:
                    prefixes.setdefault(system, []).append((code.code_prefix, concept, code.verified))
            for name in entry.names:
                names.setdefault(concept.kind, []).append((name, concept))
    # A site file may turn the suffix on for an existing concept: every entry uses the merged one.
    names = {kind: [(name, concepts[c.id]) for name, c in entries] for kind, entries in names.items()}
    return Terminology(
        versions=versions,
        concepts=concepts,
        _by_code=by_code,
        _by_prefix={s: tuple(sorted(p, key=lambda item: -len(item[0]))) for s, p in prefixes.items()},
        _by_name={kind: _name_patterns(entries) for kind, entries in names.items()},
        _exact_names={kind: {" ".join(n.lower().split()): c for n, c in entries} for kind, entries in names.items()},
    )


def _merge_concept(concepts: dict[str, Concept], entry: _ConceptEntry, path: Path) -> Concept:
    existing = concepts.get(entry.id)
    if existing is None:
        concept = Concept(entry.id, entry.kind, entry.role, tuple(n.lower() for n in entry.names), entry.us_suffix)
        concepts[entry.id] = concept
        return concept
    if existing.kind is not entry.kind or (entry.role is not None and entry.role is not existing.role):
        raise MappingError(f"{path}: concept {entry.id!r} redefined with another kind or role")
    merged = Concept(
        existing.id,
        existing.kind,
        existing.role,
        existing.names + tuple(n.lower() for n in entry.names),
        existing.us_suffix or entry.us_suffix,
    )
    concepts[entry.id] = merged
    return merged


US_SUFFIX = r"(?:-[a-z]{4})?"
"""The FDA's suffix of biological products: a hyphen and four lowercase letters devoid of meaning
(FDA guidance "Nonproprietary Naming of Biological Products", 2017)."""


def _name_patterns(entries: Iterable[tuple[str, Concept]]) -> tuple[tuple[re.Pattern[str], Concept], ...]:
    # Longest names first, so "norepinephrine" is tried before "epinephrine"; word boundaries keep
    # "epinephrine" from matching inside "norepinephrine" anyway. The suffix is accepted only for
    # concepts marked ``us_suffix`` (biologics), so "diphenhydramine-zinc" (a topical combination)
    # is never read as diphenhydramine.
    ordered = sorted(entries, key=lambda item: -len(item[0]))
    return tuple(
        (
            re.compile(
                r"(?<![\w-])" + re.escape(name.lower()) + (US_SUFFIX if concept.us_suffix else "") + r"(?![\w-])",
                re.IGNORECASE,
            ),
            concept,
        )
        for name, concept in ordered
        if len(name) >= 4
    )
