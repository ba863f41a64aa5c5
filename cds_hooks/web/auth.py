"""CDS client authentication: verify the EHR's signed JWT on every call (CDS Hooks 2.0 security).

Checks, in order, each failure a bare 401: a Bearer token; an asymmetric ``alg`` (never ``none``,
never HS*); a trusted ``iss``; a ``jku`` header only when it is the issuer's JWKS URL or on its
allow-list (no JWKS is fetched from anywhere else); the signature with the issuer's key for the
``kid``; ``aud`` equal to the configured public URL of the endpoint invoked (never the Host
header); ``exp`` with a small leeway; ``iat`` not older than the configured age; ``jti`` not seen
before (replay cache); ``tenant`` on the issuer's list when it has one.
Tokens are never logged: failures are logged by reason code only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError, PyJWTError

from cds_hooks.settings import is_https_or_loopback_http

log = logging.getLogger("crs_cds.auth")

ALLOWED_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
"""Asymmetric only; CDS Hooks recommends ES384 and RS384."""


class Unauthorized(Exception):
    """Any authentication failure; the reason is for the log, never for the response."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TrustedIssuer:
    iss: str
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jku_allowlist: tuple[str, ...] = ()
    tenants: tuple[str, ...] | None = None


def parse_trusted_issuers(raw: Mapping[str, Any]) -> dict[str, TrustedIssuer]:
    """``{"iss": {"jwks_url"|"jwks_file": ..., "jku_allowlist": [...], "tenants": [...]}}``."""
    issuers: dict[str, TrustedIssuer] = {}
    for iss, spec in raw.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"trusted issuer {iss!r}: expected an object")
        jwks_url = spec.get("jwks_url")
        jwks_file = spec.get("jwks_file")
        if (jwks_url is None) == (jwks_file is None):
            raise ValueError(f"trusted issuer {iss!r}: give exactly one of jwks_url or jwks_file")
        if jwks_url is not None and not is_https_or_loopback_http(str(jwks_url)):
            raise ValueError(f"trusted issuer {iss!r}: jwks_url must be https")
        if jwks_file is not None and not Path(jwks_file).is_file():
            raise ValueError(f"trusted issuer {iss!r}: jwks_file {jwks_file} not found")
        jku_allowlist = tuple(str(u) for u in spec.get("jku_allowlist", ()))
        insecure_jku = [u for u in jku_allowlist if not is_https_or_loopback_http(u)]
        if insecure_jku:
            raise ValueError(f"trusted issuer {iss!r}: jku_allowlist entries must be https: {insecure_jku}")
        tenants = spec.get("tenants")
        issuers[iss] = TrustedIssuer(
            iss=iss,
            jwks_url=str(jwks_url) if jwks_url is not None else None,
            jwks_file=Path(jwks_file) if jwks_file is not None else None,
            jku_allowlist=jku_allowlist,
            tenants=tuple(str(t) for t in tenants) if tenants is not None else None,
        )
    return issuers


class ReplayCache(Protocol):
    """Remembers ``jti`` values until they expire; a second sighting is a replay."""

    def first_sighting(self, issuer: str, jti: str, expires_at: float) -> bool: ...


class InMemoryReplayCache:
    """A bounded in-process replay cache (one replica; use a shared store for several)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._max = max_entries

    def first_sighting(self, issuer: str, jti: str, expires_at: float) -> bool:
        now = time.time()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        key = (issuer, jti)
        if key in self._seen and self._seen[key] >= now:
            return False
        self._seen[key] = expires_at
        self._seen.move_to_end(key)
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True


@dataclass
class _CachedJwks:
    keys: dict[str, PyJWK]
    fetched_at: float


@dataclass
class _Failing:
    """An issuer's JWKS URL that failed: how often in a row, and when it may be tried again."""

    failures: int
    retry_at: float


JWKS_BACKOFF_FIRST_SECONDS = 1.0
JWKS_BACKOFF_MAX_SECONDS = 60.0
"""While a JWKS URL fails, it is tried again after 1 s, 2 s, 4 s ... at most every 60 s."""


@dataclass
class JwksCache:
    """JWKS per URL, cached; an unknown ``kid`` re-fetches at most once per ``min_refetch_seconds``.

    While a URL fails (unreachable, not 200, malformed), requests naming it answer 401 without
    fetching it again until its backoff ends (exponential, ``backoff_first_seconds`` doubling up to
    ``backoff_max_seconds``): a flood of tokens naming a dead issuer must not become a flood of
    outbound requests. One lock per URL, so a slow issuer does not hold up the others.
    """

    client: httpx.AsyncClient
    ttl_seconds: float = 3600.0
    min_refetch_seconds: float = 30.0
    timeout_seconds: float = 3.0
    backoff_first_seconds: float = JWKS_BACKOFF_FIRST_SECONDS
    backoff_max_seconds: float = JWKS_BACKOFF_MAX_SECONDS
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _CachedJwks] = field(default_factory=dict)
    _failing: dict[str, _Failing] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def key(self, url: str, kid: str) -> PyJWK:
        found = self._usable(url, kid)
        if found is not None:
            return found
        if self._may_refetch(url):
            async with self._locks.setdefault(url, asyncio.Lock()):
                # Another request may have fetched (or failed) while this one waited.
                found = self._usable(url, kid)
                if found is not None:
                    return found
                if self._may_refetch(url):
                    await self._fetch_or_back_off(url)
        cached = self._cache.get(url)
        if cached is None or kid not in cached.keys:
            raise Unauthorized("unknown kid")
        return cached.keys[kid]

    def status(self, url: str) -> str:
        """``failing`` while the URL is in its backoff, ``ok`` once fetched, ``not fetched yet``."""
        if url in self._failing:
            return "failing"
        return "ok" if url in self._cache else "not fetched yet"

    def _usable(self, url: str, kid: str) -> PyJWK | None:
        cached = self._cache.get(url)
        if cached is not None and self.clock() - cached.fetched_at < self.ttl_seconds:
            return cached.keys.get(kid)
        return None

    def _may_refetch(self, url: str) -> bool:
        now = self.clock()
        failing = self._failing.get(url)
        if failing is not None and now < failing.retry_at:
            raise Unauthorized("jwks failing, backing off")
        cached = self._cache.get(url)
        return cached is None or now - cached.fetched_at >= min(self.min_refetch_seconds, self.ttl_seconds)

    async def _fetch_or_back_off(self, url: str) -> None:
        try:
            await self._fetch(url)
        except Unauthorized:
            failures = self._failing[url].failures + 1 if url in self._failing else 1
            wait = min(self.backoff_max_seconds, self.backoff_first_seconds * 2 ** (failures - 1))
            self._failing[url] = _Failing(failures, self.clock() + wait)
            log.warning("jwks fetch failed", extra={"failures": failures, "retry_in_s": wait})
            raise
        self._failing.pop(url, None)

    async def _fetch(self, url: str) -> _CachedJwks:
        try:
            response = await self.client.get(url, timeout=self.timeout_seconds, follow_redirects=False)
        except httpx.HTTPError:
            raise Unauthorized("jwks unreachable") from None
        if response.status_code != 200:
            raise Unauthorized("jwks fetch failed")
        try:
            keys = _keys_from_jwks(response.json())
        except (ValueError, PyJWKSetError, PyJWKError):
            raise Unauthorized("jwks malformed") from None
        entry = _CachedJwks(keys, self.clock())
        self._cache[url] = entry
        return entry


def _keys_from_jwks(data: object) -> dict[str, PyJWK]:
    if not isinstance(data, dict):
        raise ValueError("JWKS is not an object")
    keyset = PyJWKSet.from_dict(data)
    return {k.key_id: k for k in keyset.keys if k.key_id}


@dataclass
class ClientAuthenticator:
    """Verifies CDS client JWTs against the configured issuers."""

    issuers: Mapping[str, TrustedIssuer]
    public_base_url: str
    jwks: JwksCache
    replay: ReplayCache = field(default_factory=InMemoryReplayCache)
    leeway_seconds: float = 60.0
    max_token_age_seconds: float = 900.0
    _file_keys: dict[Path, dict[str, PyJWK]] = field(default_factory=dict)

    def audience(self, path: str) -> str:
        return self.public_base_url.rstrip("/") + path

    async def verify(self, authorization: str | None, path: str) -> dict[str, Any]:
        """The verified claims, or :class:`Unauthorized`."""
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except PyJWTError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise Unauthorized("algorithm not allowed")
        if header.get("typ") not in (None, "JWT"):
            raise Unauthorized("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("no kid")
        issuer = self.issuers.get(str(unverified.get("iss")))
        if issuer is None:
            raise Unauthorized("untrusted issuer")
        key = await self._key(issuer, kid, header.get("jku"))
        if not _key_fits(key, alg):
            raise Unauthorized("key does not match algorithm")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience(path),
                issuer=issuer.iss,
                leeway=self.leeway_seconds,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except PyJWTError as exc:
            # Every PyJWT failure, not only InvalidTokenError: a header naming another curve than
            # the key's raises InvalidKeyError, and a forged header must never be a 500.
            raise Unauthorized(f"token rejected: {type(exc).__name__}") from None
        jti, expires = self._check_age(claims, issuer)
        if isinstance(self.replay, InMemoryReplayCache):
            first = self.replay.first_sighting(issuer.iss, jti, expires)
        else:  # a shared (database) check: off the event loop
            first = await asyncio.to_thread(self.replay.first_sighting, issuer.iss, jti, expires)
        if not first:
            raise Unauthorized("replayed jti")
        return claims

    def _check_age(self, claims: Mapping[str, Any], issuer: TrustedIssuer) -> tuple[str, float]:
        """The token's ``jti`` and how long to remember it, once its age and tenant are checked."""
        now = time.time()
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or now - float(iat) > self.max_token_age_seconds + self.leeway_seconds:
            raise Unauthorized("token too old")
        if issuer.tenants is not None and claims.get("tenant") not in issuer.tenants:
            raise Unauthorized("tenant not allowed")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("no jti")
        expires = max(float(claims.get("exp", now)), now) + self.leeway_seconds
        return jti, max(expires, now + 3600)

    async def _key(self, issuer: TrustedIssuer, kid: str, jku: object) -> PyJWK:
        if jku is not None:
            if not isinstance(jku, str) or (jku != issuer.jwks_url and jku not in issuer.jku_allowlist):
                raise Unauthorized("jku not allowed")
            return await self.jwks.key(jku, kid)
        if issuer.jwks_url is not None:
            return await self.jwks.key(issuer.jwks_url, kid)
        if issuer.jwks_file is not None:
            keys = self._file_keys.get(issuer.jwks_file)
            if keys is None:
                keys = _keys_from_jwks(json.loads(issuer.jwks_file.read_text(encoding="utf-8")))
                self._file_keys[issuer.jwks_file] = keys
            if kid not in keys:
                raise Unauthorized("unknown kid")
            return keys[kid]
        raise Unauthorized("issuer has no keys")


def _key_fits(key: PyJWK, alg: str) -> bool:
    """Whether ``alg`` may be verified with ``key``.

    An EC key's curve fixes its algorithm (P-256 ES256, P-384 ES384, P-521 ES512), so ES needs an
    exact match; an RSA key serves every hash size of its own padding family (RS or PS).
    """
    if key.algorithm_name is None:
        return True
    if alg.startswith("ES") or key.algorithm_name.startswith("ES"):
        return key.algorithm_name == alg
    return key.algorithm_name[:2] == alg[:2]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("no authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("not a bearer token")
    return token.strip()
