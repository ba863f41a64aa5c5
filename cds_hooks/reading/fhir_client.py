"""Fetch what prefetch lacks from the EHR's FHIR server: concurrently, bounded, and safely.

Safety (Argonaut CDS Hooks security risk assessment; cds-hooks-checklist.md "Security"):
only allow-listed base URLs are called (exact match), https unless explicitly allowed, no
redirects, ``next`` links followed on the same origin only and up to a page cap, every request
and the whole hook call bounded in time. The access token is sent only to the allow-listed
server and appears in no log record, error or card.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from cds_hooks.reading.bundles import Flattened, flatten, unique
from cds_hooks.reading.reader import SourcedResource
from cds_hooks.reading.scopes import missing_grant

log = logging.getLogger("crs_cds.fhir")


class FhirServerRejected(Exception):
    """The hook named a FHIR server this service must not call (not allow-listed, not https)."""


@dataclass(frozen=True)
class FetchPolicy:
    allowlist: frozenset[str]
    allow_insecure: bool = False
    request_timeout_seconds: float = 3.0
    budget_seconds: float = 5.0
    max_pages: int = 20

    def check(self, base_url: str) -> str:
        """The normalised base URL, or :class:`FhirServerRejected` with a reason."""
        base = base_url.strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise FhirServerRejected("fhirServer is not an absolute http(s) URL")
        if parts.scheme == "http" and not self.allow_insecure:
            raise FhirServerRejected("fhirServer must use https")
        if parts.username or parts.password:
            raise FhirServerRejected("fhirServer must not carry credentials")
        if base not in self.allowlist:
            raise FhirServerRejected("fhirServer is not on this service's allow-list")
        return base


@dataclass
class QueryResult:
    resources: list[SourcedResource] = field(default_factory=list)
    error: str | None = None
    """Why the query failed (safe to show: no URL query, no token)."""
    not_found: bool = False


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()


class FhirFetcher:
    """Runs a hook call's queries against one FHIR server with a shared connection pool."""

    def __init__(self, client: httpx.AsyncClient, policy: FetchPolicy) -> None:
        self._client = client
        self._policy = policy

    async def fetch_all(
        self, base_url: str, queries: Mapping[str, str], *, access_token: str | None, scope: str | None = None
    ) -> dict[str, QueryResult]:
        """Every query concurrently, within the hook's time budget; failures are per query.

        ``scope`` (``fhirAuthorization.scope``, SMART v1 or v2) only explains a refusal: a query the
        FHIR server refuses names the grant the scope lacks."""
        base = self._policy.check(base_url)
        deadline = time.monotonic() + self._policy.budget_seconds
        headers = {"Accept": "application/fhir+json"}
        if access_token:
            headers["Authorization"] = f"Bearer {access_token}"
        tasks = {
            name: asyncio.create_task(self._query(base, query, headers, deadline, scope))
            for name, query in queries.items()
        }
        if not tasks:
            return {}
        # Not wait_for(gather(...)): on overrun that would discard the queries that did finish, and
        # one slow search would turn a gradable call into a 412.
        _, pending = await asyncio.wait(tasks.values(), timeout=self._policy.budget_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return {
            name: task.result()
            if task not in pending
            else QueryResult(error=f"{_kind(queries[name])} query did not finish within the time budget")
            for name, task in tasks.items()
        }

    async def _query(
        self, base: str, relative: str, headers: dict[str, str], deadline: float, scope: str | None = None
    ) -> QueryResult:
        url: str | None = f"{base}/{relative.lstrip('/')}"
        origin = _origin(base)
        collected: list[SourcedResource] = []
        kind = _kind(relative)
        is_search = "?" in relative or "/" not in relative.split("?", 1)[0]
        pages = 0
        while url is not None:
            if pages >= self._policy.max_pages:
                return QueryResult(collected, error=f"{kind} search has more than {self._policy.max_pages} pages")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return QueryResult(collected, error=f"{kind} search exceeded the time budget")
            timeout = min(self._policy.request_timeout_seconds, remaining)
            try:
                response = await self._client.get(url, headers=headers, timeout=timeout, follow_redirects=False)
            except httpx.TimeoutException:
                return QueryResult(error=f"{kind} query timed out")
            except httpx.HTTPError as exc:
                return QueryResult(error=f"{kind} query failed: FHIR server unreachable ({type(exc).__name__})")
            pages += 1
            if response.status_code == 404 and "?" not in relative:
                return QueryResult(not_found=True)
            if response.status_code in (401, 403):
                return QueryResult(error=_refusal(kind, response.status_code, scope, is_search))
            if response.status_code >= 300:
                return QueryResult(error=f"{kind} query failed with HTTP {response.status_code}")
            flat = _parse(response, expected="Bundle" if is_search or pages > 1 else kind)
            if flat is None:
                what = "a FHIR Bundle" if is_search else f"a FHIR {kind}"
                return QueryResult(error=f"{kind} response is not {what}")
            if flat.outcome is not None:
                return QueryResult(collected, error=f"{kind} query returned an OperationOutcome: {flat.outcome}")
            if flat.malformed:
                # Unreadable entries may be exactly the data that would change the grade: not "no data".
                return QueryResult(
                    [*collected, *flat.resources], error=f"{kind} response is malformed ({flat.malformed} unreadable)"
                )
            collected.extend(flat.resources)
            url = self._next_link(response, origin)
            if url == "cross-origin":
                return QueryResult(collected, error=f"{kind} search 'next' link points to another server: not followed")
        log.debug("fhir query done", extra={"resource_type": kind, "pages": pages, "count": len(collected)})
        return QueryResult(unique(collected))

    @staticmethod
    def _next_link(response: httpx.Response, origin: tuple[str, str]) -> str | None:
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return None
        links = body.get("link") if isinstance(body, dict) and body.get("resourceType") == "Bundle" else None
        if not isinstance(links, list):
            return None
        for link in links:
            if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                target = link["url"]
                return target if _origin(target) == origin else "cross-origin"
        return None


def _refusal(kind: str, status: int, scope: str | None, is_search: bool) -> str:
    """Why a query was refused, naming the grant ``fhirAuthorization.scope`` lacks (if any)."""
    reason = f"{kind} query refused by the FHIR server ({status})"
    lacking = missing_grant(scope, kind, "search" if is_search else "read") if scope else None
    return f"{reason}; {lacking}" if lacking else reason


def _kind(relative: str) -> str:
    """The resource type a query names (safe to show: no ids, no parameters)."""
    return relative.split("?", 1)[0].split("/", 1)[0]


def _parse(response: httpx.Response, *, expected: str) -> Flattened | None:
    """The response's resources, or None when it is not the ``expected`` resource type.

    A search must answer with a Bundle and a read with the type read (an OperationOutcome is
    accepted either way: it becomes the query's error); anything else is not trusted as data.
    """
    try:
        body: Any = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") not in (expected, "OperationOutcome"):
        return None
    if body["resourceType"] == "Bundle" and not isinstance(body.get("entry", []), list):
        return None
    return flatten(body)
