"""Webhook delivery: one signed JSON body per alert, retried with backoff, every attempt recorded.

The body is canonical JSON (sorted keys, no spaces) so the signature covers exactly the bytes
sent: ``X-CRS-CDS-Signature: sha256=<hex HMAC-SHA256(secret, body)>``. The alert's ``id`` is the
same on every attempt and every cycle, so a receiver that saw a delivery whose answer was lost can
drop the repeat. 2xx is delivered; anything else is retried after ``backoff_s``, doubled each time,
up to ``attempts`` per cycle; an alert still undelivered is tried again next cycle (and after a
restart: it is in the store). A 4xx other than 408/429 is not retried within the cycle: the
receiver refused the body, and asking again at once will not change its mind.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson

from cds_hooks.stores.watch_store import StoredAlert, WatchStore
from cds_hooks.watch.config import WebhookConfig

log = logging.getLogger("crs_cds.watch")

SIGNATURE_HEADER = "X-CRS-CDS-Signature"
_RETRY_4XX = frozenset({408, 425, 429})


def alert_body(alert: StoredAlert, patient_id: str) -> bytes:
    """The bytes sent: the stored body with the patient put back, canonical JSON."""
    document: dict[str, Any] = {**alert.body, "patient": f"Patient/{patient_id}"}
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        config: WebhookConfig,
        store: WatchStore,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._config = config
        self._store = store
        self._sleep = sleep

    def __repr__(self) -> str:
        return "WebhookSender(***)"

    async def deliver(self, alert: StoredAlert, patient_id: str, *, extra_log: Mapping[str, Any]) -> bool:
        """Try to deliver one alert; True once the receiver answered 2xx."""
        body = alert_body(alert, patient_id)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(self._config.secret, body)}
        first = self._store.attempts_so_far(alert.alert_id) + 1
        delay = self._config.backoff_s
        for attempt in range(first, first + self._config.attempts):
            status: int | None = None
            error: str | None = None
            try:
                response = await self._client.post(
                    self._config.url,
                    content=body,
                    headers=headers,
                    timeout=self._config.timeout_s,
                    follow_redirects=False,
                )
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"webhook unreachable ({type(exc).__name__})"
            delivered = status is not None and 200 <= status < 300
            if status is not None and not delivered:
                error = f"webhook answered HTTP {status}"
            self._store.record_delivery(
                alert.alert_id, attempt=attempt, status_code=status, error=error, delivered=delivered
            )
            if delivered:
                log.info(
                    "alert delivered",
                    extra={**extra_log, "alert_id": alert.alert_id, "kind": alert.kind, "attempt": attempt},
                )
                return True
            log.warning(
                "alert delivery failed",
                extra={**extra_log, "alert_id": alert.alert_id, "attempt": attempt, "reason": error},
            )
            if status is not None and 400 <= status < 500 and status not in _RETRY_4XX:
                return False
            if attempt < first + self._config.attempts - 1:
                await self._sleep(delay)
                delay *= 2
        return False
