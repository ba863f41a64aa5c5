"""Access to the watched FHIR server: SMART Backend Services, or a static bearer token.

SMART Backend Services (SMART App Launch 2.x, "client-confidential-asymmetric"): the token endpoint
comes from ``{fhir}/.well-known/smart-configuration`` (fetched without redirects; https unless
insecure servers are allowed, as for the FHIR server itself); the watcher signs a one-use client
assertion (``iss`` = ``sub`` = client id, ``aud`` = token endpoint, ``exp`` <= 5 min, a random
``jti``, header ``kid``) with its private key, RS384 for an RSA key or ES384 for a P-384 key, and
posts ``grant_type=client_credentials`` with ``client_assertion_type`` jwt-bearer. The access
token is kept in memory until shortly before it expires. No token or assertion is ever logged.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from cds_hooks.watch.config import BackendServices

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 300
"""SMART Backend Services: the assertion's ``exp`` is at most five minutes ahead."""
RENEW_BEFORE_S = 60.0
"""Ask for a new token this long before the current one expires."""


class AccessError(Exception):
    """No access token could be had; the message is safe to log (no token, no assertion)."""


class TokenSource(Protocol):
    async def token(self, client: httpx.AsyncClient) -> str | None: ...


class StaticToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken(***)"

    async def token(self, client: httpx.AsyncClient) -> str | None:
        return self._token


class BackendServicesToken:
    """Client-credentials tokens with a private-key JWT assertion, cached until near expiry."""

    def __init__(
        self, fhir_server: str, config: BackendServices, *, allow_insecure: bool, timeout_s: float = 10.0
    ) -> None:
        self._fhir_server = fhir_server.rstrip("/")
        self._config = config
        self._allow_insecure = allow_insecure
        self._timeout_s = timeout_s
        self._key, self._algorithm = load_signing_key(config.private_key_file.read_bytes())
        self._token_endpoint: str | None = None
        self._token: str | None = None
        self._expires_s = 0.0

    def __repr__(self) -> str:
        return f"BackendServicesToken(client_id={self._config.client_id!r})"

    async def token(self, client: httpx.AsyncClient) -> str | None:
        if self._token is not None and time.time() < self._expires_s - RENEW_BEFORE_S:
            return self._token
        endpoint = self._token_endpoint or await self._discover(client)
        self._token_endpoint = endpoint
        form = {
            "grant_type": "client_credentials",
            "scope": self._config.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(endpoint, now_s=time.time()),
        }
        try:
            response = await client.post(endpoint, data=form, timeout=self._timeout_s, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise AccessError(f"token endpoint unreachable ({type(exc).__name__})") from None
        body = _json(response)
        if response.status_code != 200 or body is None:
            error = body.get("error") if isinstance(body, dict) else None
            raise AccessError(f"token endpoint refused the client ({response.status_code}, {error or 'no error code'})")
        token = body.get("access_token")
        if not isinstance(token, str) or not token or str(body.get("token_type", "")).lower() != "bearer":
            raise AccessError("token response holds no Bearer access_token")
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 300.0
        self._token, self._expires_s = token, time.time() + lifetime
        return token

    def assertion(self, token_endpoint: str, *, now_s: float) -> str:
        """The signed client assertion for one token request (one-use: a fresh ``jti``)."""
        claims = {
            "iss": self._config.client_id,
            "sub": self._config.client_id,
            "aud": token_endpoint,
            "exp": int(now_s) + ASSERTION_LIFETIME_S,
            "iat": int(now_s),
            "jti": uuid.uuid4().hex,
        }
        headers = {"typ": "JWT"}
        if self._config.key_id:
            headers["kid"] = self._config.key_id
        return jwt.encode(claims, self._key, algorithm=self._algorithm, headers=headers)

    async def _discover(self, client: httpx.AsyncClient) -> str:
        url = f"{self._fhir_server}/.well-known/smart-configuration"
        try:
            response = await client.get(
                url, headers={"Accept": "application/json"}, timeout=self._timeout_s, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            raise AccessError(f"smart-configuration unreachable ({type(exc).__name__})") from None
        body = _json(response)
        endpoint = body.get("token_endpoint") if isinstance(body, dict) and response.status_code == 200 else None
        if not isinstance(endpoint, str):
            raise AccessError(f"smart-configuration has no token_endpoint ({response.status_code})")
        parts = urlsplit(endpoint)
        if parts.scheme != "https" and not (parts.scheme == "http" and self._allow_insecure):
            raise AccessError("token_endpoint must be https")
        if not parts.netloc or parts.username or parts.password:
            raise AccessError("token_endpoint is not a plain absolute URL")
        return endpoint


def load_signing_key(pem: bytes) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]:
    """The private key and its algorithm: RS384 for RSA (>= 2048 bits), ES384 for P-384."""
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise AccessError(f"the private key file is not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise AccessError("an RSA key for RS384 needs at least 2048 bits")
        return key, "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise AccessError("an EC key for ES384 must be on P-384 (secp384r1)")
        return key, "ES384"
    raise AccessError("the private key must be RSA (RS384) or EC P-384 (ES384)")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
