"""Service settings from the environment (prefix ``CRS_CDS_``), validated at start-up.

An invalid value stops the service before it answers anything: a grading service that starts
with a half-read configuration would grade with windows nobody chose.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cds_hooks.grading import GRADERS, GradingConfig
from cds_hooks.reading.fhir_time import parse_instant


def is_loopback_host(host: str | None) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1), compared as parsed, never as a prefix."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_https_or_loopback_http(url: str) -> bool:
    """https with a host, or plain http to this machine only (local development and tests).

    Why parsed: a prefix test accepted ``http://127.0.0.1.attacker.example`` (a public host whose
    name begins with the loopback address) and ``http://127.0.0.1@attacker.example`` (userinfo).
    """
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # a malformed port raises here
    except ValueError:
        return False
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return False
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if parts.netloc.lower() not in (host, f"{host}:{parts.port}"):
        return False  # e.g. "[::1].attacker.example", which urlsplit reads as host "::1"
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and is_loopback_host(parts.hostname)


def _split(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRS_CDS_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = "info"

    mapping_files: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Extra (site) mapping files, comma-separated, loaded after the built-in ones."""

    systems: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["ASTCT-2019"])
    """Grading systems shown on the card; ASTCT is always first."""

    fever_window_hours: float = Field(default=24.0, gt=0, le=168)
    prior_crs_lookback_days: float = Field(default=14.0, ge=0, le=90)
    hypotension_window_hours: float = Field(default=24.0, gt=0, le=168)
    oxygen_recency_hours: float = Field(default=12.0, gt=0, le=72)
    worst_grade_window_hours: float = Field(default=72.0, gt=0, le=720)
    spo2_alert_percent: float = Field(default=92.0, ge=50, le=100)

    icans: bool = True
    """Grade ICANS (ASTCT 2019) beside CRS and answer with its own card; adds the optional
    ``icansAssessments`` and ``iceQuestionnaires`` prefetch keys."""
    icans_window_hours: float = Field(default=24.0, gt=0, le=168)
    """ICANS assessments older than this are not the current state [choice]."""
    dosing_weight_max_age_days: float = Field(default=90.0, gt=0, le=3650)
    """The oldest body weight a tocilizumab dose is computed from [choice]; older: no dose."""
    icans_overdue_hours: float = Field(default=12.0, gt=0, le=168)
    """An ICE/CAPD assessment is overdue this long after the last one while ICANS is followed [choice]."""
    icans_followed_days: float = Field(default=7.0, gt=0, le=60)
    """ICANS is followed when an ICE, CAPD or a finding of grade >= 1 was charted this recently [choice]."""
    ice_questionnaire_file: Path | None = None
    """The site's ICE form item map (default: the built-in ``mappings/ice-questionnaire.yaml``)."""

    card_for_grade_zero: bool = False
    """Also answer with a card when the grade is 0 and the data are complete."""

    evaluation_time: datetime | None = None
    """Grade at this fixed time instead of the call's time (replays and demos only)."""
    allow_client_evaluation_time: bool = True
    """Honour the request extension ``crs-cds-hooks.at`` (a client replaying a past moment)."""

    smart_app_url: str | None = None

    smart_client_id: str | None = None
    """The client id the EHR's authorization server registered for the SMART app; with
    ``smart_redirect_url`` it turns the app (``/smart/...``) on."""
    smart_redirect_url: str | None = None
    """The registered redirect URL, ``<public URL>/smart/callback``: https, or http on loopback."""
    smart_issuer_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """FHIR base URLs a launch may name as ``iss`` (exact match after trimming '/'); each must also
    be on ``fhir_server_allowlist``. Empty: the FHIR server allow-list itself."""
    smart_scopes: str = (
        "launch launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs "
        "patient/MedicationAdministration.rs patient/Procedure.rs patient/Condition.rs"
    )
    smart_session_minutes: float = Field(default=60.0, gt=0, le=720)
    """How long a signed-in app session lives server-side (capped by the token's expiry)."""

    max_body_bytes: int = Field(default=20_000_000, ge=1024)

    fhir_server_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """FHIR base URLs the service may call back (exact match after trimming a trailing '/')."""
    allow_insecure_fhir_server: bool = False
    """Allow http:// FHIR servers (development and tests only)."""
    fhir_request_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    hook_time_budget_seconds: float = Field(default=5.0, gt=0, le=120)
    """Total time for all FHIR queries of one hook call."""
    fhir_max_pages: int = Field(default=20, ge=1, le=1000)

    trusted_issuers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """JSON: ``{"<iss>": {"jwks_url": "https://..."} | {"jwks_file": "..."}, "jku_allowlist": [...],
    "tenants": [...]}``. With none configured the service refuses to start unless
    ``allow_unauthenticated`` is set."""
    public_base_url: str | None = None
    """The URL the EHR calls (``aud`` is this + the endpoint path); https, or http on loopback."""
    allow_unauthenticated: bool = False
    """Development only: accept calls without a CDS client JWT (logged as a warning)."""
    token_max_age_seconds: float = Field(default=900, gt=0, le=3600)
    clock_leeway_seconds: float = Field(default=60, ge=0, le=300)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    database_url: str = "sqlite:///crs-cds.sqlite3"
    """Card and feedback store: a SQLite file (relative to the working directory by default) or
    ``postgresql://user@host/db`` when several replicas share one store."""

    @field_validator(
        "mapping_files", "systems", "fhir_server_allowlist", "cors_origins", "smart_issuer_allowlist", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("systems")
    @classmethod
    def _known_systems(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in GRADERS]
        if unknown:
            raise ValueError(f"unknown grading systems {unknown}; known: {sorted(GRADERS)}")
        return value

    @field_validator("ice_questionnaire_file")
    @classmethod
    def _questionnaire_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"ICE questionnaire file not found: {value}")
        return value

    @field_validator("mapping_files")
    @classmethod
    def _files_exist(cls, value: list[Path]) -> list[Path]:
        missing = [str(p) for p in value if not p.is_file()]
        if missing:
            raise ValueError(f"mapping files not found: {missing}")
        return value

    @field_validator("fhir_server_allowlist", "smart_issuer_allowlist")
    @classmethod
    def _base_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("https://", "http://")):
                raise ValueError(f"FHIR server allow-list entry is not an http(s) URL: {url!r}")
        return [url.rstrip("/") for url in value]

    @field_validator("smart_redirect_url")
    @classmethod
    def _redirect_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not is_https_or_loopback_http(value):
            raise ValueError("smart_redirect_url must be https (or http on a loopback address for local use)")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not is_https_or_loopback_http(value):
            raise ValueError("public_base_url must be https (or http on a loopback address for local use)")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("database_url must be sqlite:///<path> or postgresql://...")
        return value

    @field_validator("evaluation_time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("evaluation_time needs a timezone (e.g. 2025-03-04T08:00:00Z)")
        if value is not None:
            checked = parse_instant(value.isoformat())
            if isinstance(checked, str):
                raise ValueError(f"evaluation_time: {checked}")
        return value

    def grading_config(self) -> GradingConfig:
        return GradingConfig(
            fever_window_hours=self.fever_window_hours,
            prior_crs_lookback_days=self.prior_crs_lookback_days,
            hypotension_window_hours=self.hypotension_window_hours,
            oxygen_recency_hours=self.oxygen_recency_hours,
            worst_grade_window_hours=self.worst_grade_window_hours,
            spo2_alert_percent=self.spo2_alert_percent,
            dosing_weight_max_age_days=self.dosing_weight_max_age_days,
        )
