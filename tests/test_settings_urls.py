"""The "https, or http on this machine" rule parses the host exactly (issue 12): a public host
whose name starts with ``127.0.0.1``, or userinfo before it, is not loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cds_hooks.errors import ConfigurationError
from cds_hooks.settings import Settings, is_https_or_loopback_http
from cds_hooks.web.app import create_app
from pydantic import ValidationError

URLS: list[Any] = [
    pytest.param("https://cds.example.org", True, id="https-public"),
    pytest.param("http://127.0.0.1:8080", True, id="http-ipv4-loopback"),
    pytest.param("http://127.3.4.5:8080/base", True, id="http-anywhere-in-127/8"),
    pytest.param("http://localhost:8080", True, id="http-localhost"),
    pytest.param("http://LOCALHOST", True, id="http-localhost-upper-case"),
    pytest.param("http://[::1]:8080", True, id="http-ipv6-loopback"),
    pytest.param("http://127.0.0.1.attacker.example", False, id="loopback-prefix-of-a-public-name"),
    pytest.param("http://127.0.0.1@attacker.example", False, id="loopback-as-userinfo"),
    pytest.param("http://localhost.attacker.example", False, id="localhost-prefix-of-a-public-name"),
    pytest.param("http://[::1].attacker.example", False, id="bracketed-v6-prefix"),
    pytest.param("http://128.0.0.1", False, id="http-not-loopback"),
    pytest.param("http://cds.example.org", False, id="http-public"),
    pytest.param("https://user:pw@cds.example.org", False, id="https-with-credentials"),
    pytest.param("http://127.0.0.1:99999", False, id="port-out-of-range"),
    pytest.param("ftp://127.0.0.1", False, id="other-scheme"),
    pytest.param("https://", False, id="no-host"),
]


@pytest.mark.parametrize(("url", "allowed"), URLS)
def test_https_or_loopback_http(url: str, allowed: bool) -> None:
    assert is_https_or_loopback_http(url) is allowed


@pytest.mark.parametrize("field", ["public_base_url", "smart_redirect_url"])
@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://127.0.0.1.attacker.example", id="loopback-prefix-of-a-public-name"),
        pytest.param("http://localhost.attacker.example/smart/callback", id="localhost-prefix"),
        pytest.param("http://127.0.0.1@attacker.example", id="loopback-as-userinfo"),
    ],
)
def test_settings_refuse_public_hosts_posing_as_loopback(field: str, url: str) -> None:
    with pytest.raises(ValidationError, match="https"):
        values: dict[str, Any] = {field: url}
        Settings(**values)


def _issuer_settings(tmp_path: Path, spec: dict[str, Any]) -> Settings:
    return Settings(
        trusted_issuers={"https://ehr.example.org": spec},
        public_base_url="https://cds.example.org",
        database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
    )


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"jwks_url": "http://127.0.0.1.attacker.example/jwks"}, id="jwks-url-loopback-prefix"),
        pytest.param({"jwks_url": "http://127.0.0.1@attacker.example/jwks"}, id="jwks-url-loopback-userinfo"),
        pytest.param(
            {"jwks_url": "https://ehr.example.org/jwks", "jku_allowlist": ["http://attacker.example/jwks"]},
            id="jku-allowlist-over-http",
        ),
    ],
)
def test_issuer_key_urls_must_be_https_or_loopback(tmp_path: Path, spec: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="https"):
        create_app(_issuer_settings(tmp_path, spec))


def test_loopback_jwks_url_is_still_allowed(tmp_path: Path) -> None:
    create_app(_issuer_settings(tmp_path, {"jwks_url": "http://127.0.0.1:9/jwks"}))
