"""The watcher's configuration, taken from the validated settings (``CRS_CDS_WATCH_*``).

Settings check each value on its own; here the watcher checks that it has what it needs to work
(a server, patients, access, a webhook) and refuses to start otherwise: a watcher that runs without
a webhook would look like a quiet ward.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cds_hooks.reading.fhir_client import FetchPolicy
from cds_hooks.settings import Settings
from cds_hooks.watch.rules import AlertRules


class WatchConfigError(Exception):
    """The watcher cannot start with these settings; the message names the setting."""


@dataclass(frozen=True)
class BackendServices:
    """SMART Backend Services: client credentials with a private-key JWT assertion."""

    client_id: str
    private_key_file: Path
    key_id: str | None
    scope: str


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: bytes
    attempts: int
    backoff_s: float
    timeout_s: float


@dataclass(frozen=True)
class WatchConfig:
    fhir_server: str
    patients: tuple[str, ...]
    group: str | None
    interval_s: float
    static_token: str | None
    backend: BackendServices | None
    webhook: WebhookConfig
    rules: AlertRules
    full_read_s: float
    lease_s: float
    policy: FetchPolicy
    writeback: str
    database_url: str

    def __repr__(self) -> str:  # the token and the webhook secret never reach a log or traceback
        return f"WatchConfig(fhir_server={self.fhir_server!r}, patients={len(self.patients)}, group={self.group!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> WatchConfig:
        if settings.watch_fhir_server is None:
            raise WatchConfigError("CRS_CDS_WATCH_FHIR_SERVER is required (a base URL on the FHIR allow-list)")
        if not settings.watch_patients and settings.watch_group is None:
            raise WatchConfigError("set CRS_CDS_WATCH_PATIENTS (ids) or CRS_CDS_WATCH_GROUP (a FHIR Group id)")
        if settings.watch_webhook_url is None or settings.watch_webhook_secret is None:
            raise WatchConfigError("CRS_CDS_WATCH_WEBHOOK_URL and CRS_CDS_WATCH_WEBHOOK_SECRET are required")
        backend = None
        if settings.watch_client_id is not None and settings.watch_private_key_file is not None:
            backend = BackendServices(
                settings.watch_client_id, settings.watch_private_key_file, settings.watch_key_id, _scope(settings)
            )
        token = settings.watch_token.get_secret_value() if settings.watch_token is not None else None
        if backend is None and token is None:
            raise WatchConfigError(
                "set CRS_CDS_WATCH_CLIENT_ID with CRS_CDS_WATCH_PRIVATE_KEY_FILE (SMART Backend Services) "
                "or CRS_CDS_WATCH_TOKEN"
            )
        return cls(
            fhir_server=settings.watch_fhir_server.strip().rstrip("/"),
            patients=tuple(dict.fromkeys(settings.watch_patients)),
            group=settings.watch_group,
            interval_s=settings.watch_interval_s,
            static_token=token,
            backend=backend,
            webhook=WebhookConfig(
                url=settings.watch_webhook_url,
                secret=settings.watch_webhook_secret.get_secret_value().encode(),
                attempts=settings.watch_webhook_attempts,
                backoff_s=settings.watch_webhook_backoff_s,
                timeout_s=settings.watch_webhook_timeout_s,
            ),
            rules=AlertRules(stale_after=timedelta(hours=settings.watch_stale_after_hours)),
            full_read_s=settings.watch_full_read_s,
            lease_s=settings.watch_lease_s,
            policy=FetchPolicy(
                allowlist=frozenset(settings.fhir_server_allowlist),
                allow_insecure=settings.allow_insecure_fhir_server,
                request_timeout_seconds=settings.fhir_request_timeout_seconds,
                budget_seconds=settings.watch_fetch_budget_s,
                max_pages=settings.fhir_max_pages,
            ),
            writeback=settings.watch_writeback,
            database_url=settings.database_url,
        )


def _scope(settings: Settings) -> str:
    """The configured system scopes, plus the create scope that write-back needs."""
    extra = {"communication": "system/Communication.c", "flag": "system/Flag.c"}.get(settings.watch_writeback)
    scopes = settings.watch_scope.split()
    if extra is not None and extra not in scopes:
        scopes.append(extra)
    return " ".join(scopes)
