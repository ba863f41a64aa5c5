"""Service settings from the environment (prefix ``CRS_CDS_``), validated at start-up.

An invalid value stops the service before it answers anything: a grading service that starts
with a half-read configuration would grade with windows nobody chose.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cds_hooks.grading import KNOWN_SYSTEMS, GradingConfig
from cds_hooks.grading.config import DEFAULT_MASKING_WINDOWS_HOURS
from cds_hooks.reading.fhir_time import parse_instant
from cds_hooks.stores.database import missing_driver
from cds_hooks.stores.session_table import is_session_key

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


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


def _https_or_loopback(value: str, name: str) -> str:
    """https, or http to this machine: the one rule of :func:`is_https_or_loopback_http`."""
    if urlsplit(value).username is not None or urlsplit(value).password is not None:
        raise ValueError(f"{name} must not carry credentials")
    if not is_https_or_loopback_http(value):
        raise ValueError(f"{name} must be https (or http on a loopback address for local use)")
    return value


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
    """Grading systems: CRS systems shown on the CRS card (ASTCT always first) and ICANS systems shown
    on the ICANS card beside ASTCT's (``ASTCT-2019-ICANS``, ``CTCAE-6.0-ICANS``)."""

    fever_window_hours: float = Field(default=24.0, gt=0, le=168)
    prior_crs_lookback_days: float = Field(default=14.0, ge=0, le=90)
    hypotension_window_hours: float = Field(default=24.0, gt=0, le=168)
    oxygen_recency_hours: float = Field(default=12.0, gt=0, le=72)
    worst_grade_window_hours: float = Field(default=72.0, gt=0, le=720)
    spo2_alert_percent: float = Field(default=92.0, ge=50, le=100)
    masking_windows_hours: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    """Overrides of the masked-fever windows after prophylaxis, ``agent_or_role=hours`` comma-separated
    (``tocilizumab=336,anakinra=24,corticosteroid=72,antipyretic=8``); the rest keep their defaults."""
    site_timezone: str | None = None
    """IANA time zone a date-only FHIR time is read in (its calendar day); unset: any UTC offset."""

    icans: bool = True
    """Grade ICANS (ASTCT 2019) beside CRS and answer with its own card; adds the optional
    ``icansAssessments`` and ``iceQuestionnaires`` prefetch keys."""
    labs: bool = True
    """Read laboratory values (``mappings/labs.yaml``) and show the lab scores, the monitoring panel
    and the HLH and risk cards (issue 18); adds the optional ``labResults`` prefetch key."""
    lab_overdue_hours: float = Field(default=24.0, gt=0, le=168)
    """During an active CRS episode an ASCO lab is overdue when older than this [choice]."""
    dic_window_hours: float = Field(default=24.0, gt=0, le=168)
    """ISTH DIC: the latest value of each component in this window counts [choice]."""
    dic_pt_normal_s: float | None = Field(default=None, gt=0, le=60)
    """ISTH DIC: PT upper normal (s) for a PT Observation without a referenceRange; unset: unknown."""
    dic_d_dimer_feu_uln_mg_l: float | None = Field(default=None, gt=0, le=100)
    """ISTH DIC: D-dimer FEU upper normal (mg/L) without a referenceRange; unset: unknown."""
    dic_d_dimer_ddu_uln_mg_l: float | None = Field(default=None, gt=0, le=100)
    """ISTH DIC: D-dimer DDU upper normal (mg/L) without a referenceRange; unset: unknown."""
    dic_inr_normal_pt_s: float | None = Field(default=None, gt=0, le=60)
    """ISTH DIC, INR-only sites: mean normal PT (s) for PT = normal x INR^(1/ISI); needs the ISI too."""
    dic_inr_isi: float | None = Field(default=None, gt=0, le=5)
    """ISTH DIC, INR-only sites: the thromboplastin's ISI."""
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
    board_scopes: str = "openid fhirUser user/Patient.rs user/Observation.rs"
    """Scopes of the unit board's standalone sign-in (``/board``): user-level, no patient context."""
    board_issuer: str | None = None
    """The FHIR server whose users may open the board; default ``watch_fhir_server``, else the only
    SMART issuer. It must be on the SMART issuer allow-list."""
    board_refresh_s: int = Field(default=60, ge=10, le=3600)
    """How often the board page reloads itself (``<meta http-equiv="refresh">``)."""

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
    openapi: bool = True
    """Publish the OpenAPI schema at ``/openapi.json`` (no data in it: the shapes the service
    already documents); ``false`` removes the route."""
    discovery_hook_version: bool = False
    """CDS Hooks 3.0: add ``hookVersion`` to each discovery entry (off: exactly the 2.0 shape)."""
    token_max_age_seconds: float = Field(default=900, gt=0, le=3600)
    clock_leeway_seconds: float = Field(default=60, ge=0, le=300)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    database_url: str = "sqlite:///crs-cds.sqlite3"
    """Card and feedback store: a SQLite file (relative to the working directory by default) or
    ``postgresql://user@host/db`` when several replicas share one store (then also the JWT replay
    check and, with ``session_key``, the SMART sessions)."""
    session_key: SecretStr | None = None
    """Fernet key (``crs-cds new-session-key``) sealing the SMART sessions kept in the database, so
    every replica can read them; unset: sessions stay in this process's memory (one replica)."""
    card_spool_capacity: int = Field(default=10_000, ge=0, le=1_000_000)
    """Card records kept in memory while the store is down, replayed when it returns [choice]."""

    # -- the ward watcher (``crs-cds watch``, issue 15) ------------------------------------------
    watch_fhir_server: str | None = None
    """The FHIR base URL the watcher reads; must be on ``fhir_server_allowlist``."""
    watch_patients: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Patient ids to watch (comma-separated); or ``watch_group``."""
    watch_group: str | None = None
    """Id of a FHIR Group on the watched server whose Patient members are watched (re-read each cycle)."""
    watch_interval_s: float = Field(default=300.0, gt=0, le=86_400)
    watch_token: SecretStr | None = None
    """A static bearer token for the watched server (tests and simple sites)."""
    watch_client_id: str | None = None
    """SMART Backend Services client id; with ``watch_private_key_file`` instead of a static token."""
    watch_private_key_file: Path | None = None
    """PEM private key (RSA for RS384, P-384 EC for ES384) that signs the client assertion."""
    watch_key_id: str | None = None
    """``kid`` of that key in the JWKS the site registered for the client."""
    watch_scope: str = (
        "system/Patient.rs system/Group.rs system/Observation.rs system/MedicationAdministration.rs "
        "system/Procedure.rs system/Condition.rs system/QuestionnaireResponse.rs"
    )
    watch_webhook_url: str | None = None
    """Where alerts are POSTed: https, or http on loopback."""
    watch_webhook_secret: SecretStr | None = None
    """HMAC-SHA256 key of the ``X-CRS-CDS-Signature`` header (at least 16 characters)."""
    watch_webhook_attempts: int = Field(default=5, ge=1, le=20)
    """Attempts per alert and cycle; an undelivered alert is tried again next cycle (same id)."""
    watch_webhook_backoff_s: float = Field(default=1.0, ge=0, le=300)
    """Wait before the second attempt; doubled before each further one."""
    watch_webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    watch_stale_after_hours: float = Field(default=8.0, gt=0, le=168)
    """An unresolved episode with no temperature (or, with ICANS graded, no assessment) for this long
    raises one ``stale-data`` alert [choice]."""
    watch_full_read_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    """Re-read each patient in full this often (``_lastUpdated`` misses deletions)."""
    watch_lease_s: float = Field(default=900.0, gt=0, le=86_400)
    """How long the working watcher's lease lasts without renewal; must exceed the interval."""
    watch_fetch_budget_s: float = Field(default=30.0, gt=0, le=600)
    """Time for all FHIR queries of one patient in one cycle."""
    watch_writeback: Literal["none", "communication", "flag"] = "none"
    """Also write each alert back to the FHIR server as a Communication or a Flag."""

    @field_validator(
        "mapping_files",
        "systems",
        "fhir_server_allowlist",
        "cors_origins",
        "smart_issuer_allowlist",
        "watch_patients",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("systems")
    @classmethod
    def _known_systems(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in KNOWN_SYSTEMS]
        if unknown:
            raise ValueError(f"unknown grading systems {unknown}; known: {list(KNOWN_SYSTEMS)}")
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

    @field_validator("watch_patients")
    @classmethod
    def _watch_ids(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _FHIR_ID.match(v)]
        if bad:
            raise ValueError(f"{len(bad)} watched patient id(s) are not FHIR ids ([A-Za-z0-9-.]{{1,64}})")
        return value

    @field_validator("watch_group")
    @classmethod
    def _watch_group_id(cls, value: str | None) -> str | None:
        if value is not None and not _FHIR_ID.match(value):
            raise ValueError("watch_group must be a FHIR id ([A-Za-z0-9-.]{1,64})")
        return value

    @field_validator("watch_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        return None if value is None else _https_or_loopback(value, "watch_webhook_url")

    @field_validator("watch_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("watch_webhook_secret must be at least 16 characters")
        return value

    @field_validator("watch_private_key_file")
    @classmethod
    def _key_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"watch private key file not found: {value}")
        return value

    @model_validator(mode="after")
    def _watch_consistent(self) -> Self:
        if self.watch_fhir_server is not None:
            base = self.watch_fhir_server.strip().rstrip("/")
            if base not in self.fhir_server_allowlist:
                raise ValueError("watch_fhir_server must be on fhir_server_allowlist")
        if self.watch_patients and self.watch_group is not None:
            raise ValueError("set watch_patients or watch_group, not both")
        if self.watch_token is not None and self.watch_client_id is not None:
            raise ValueError("set watch_token or watch_client_id (SMART Backend Services), not both")
        if (self.watch_client_id is None) != (self.watch_private_key_file is None):
            raise ValueError("watch_client_id and watch_private_key_file go together")
        if self.watch_lease_s <= self.watch_interval_s:
            raise ValueError("watch_lease_s must be longer than watch_interval_s (the worker renews it each cycle)")
        return self

    @field_validator("session_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not is_session_key(value.get_secret_value()):
            raise ValueError("session_key must be a Fernet key (32 url-safe base64 bytes): crs-cds new-session-key")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("database_url must be sqlite:///<path> or postgresql://...")
        problem = missing_driver(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("masking_windows_hours", mode="before")
    @classmethod
    def _windows(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in value.split(","):
            if not item.strip():
                continue
            name, sep, hours = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"masking window {item!r} is not agent_or_role=hours")
            pairs[name.strip()] = hours.strip()
        return pairs

    @field_validator("masking_windows_hours")
    @classmethod
    def _windows_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, hours in value.items():
            if not 0 <= hours <= 24 * 90:
                raise ValueError(f"masking window {name}={hours:g} h is outside 0-2160 h")
        return value

    @field_validator("site_timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"site_timezone {value!r} is not a known IANA time zone") from exc
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
            masking_windows_hours=tuple({**dict(DEFAULT_MASKING_WINDOWS_HOURS), **self.masking_windows_hours}.items()),
            site_timezone=self.site_timezone,
        )
