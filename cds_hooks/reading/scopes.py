"""What a ``fhirAuthorization.scope`` string lets the service read: SMART v1 and v2 scopes.

Why: CDS Hooks 3.0 clients send SMART v2 scopes (``patient/Observation.rs``), older ones v1
(``patient/Observation.read``). The service never refuses a call for its scope (the FHIR server
decides, and a scope it cannot parse may still be honoured); it reads the scope only to say why a
query the FHIR server refused failed, so the missing data names the grant that was lacking.

v1: ``<context>/<type>.<read|write|*>``; v2: ``<context>/<type>.<permissions>`` where the
permissions are letters of ``cruds`` in that order (``rs``, ``r``, ``s``, ``cruds``), optionally
followed by ``?param=value`` (a narrowed grant, still a grant for the type). Contexts: ``patient``,
``user``, ``system``; ``*`` is any type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Interaction = Literal["read", "search"]

_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$")
_V2_ORDER = "cruds"


@dataclass(frozen=True)
class Grant:
    context: str
    resource_type: str  # "*" for every type
    read: bool
    search: bool


def parse_scope(scope: str) -> Grant | None:
    """One scope token as a grant, or None when it grants no FHIR resource access."""
    match = _SCOPE.match(scope)
    if match is None:
        return None
    context, resource_type, permissions, _ = match.groups()
    if permissions in ("read", "*"):  # v1: read covers read and search
        return Grant(context, resource_type, read=True, search=True)
    if permissions == "write":
        return Grant(context, resource_type, read=False, search=False)
    if _is_v2(permissions):
        return Grant(context, resource_type, read="r" in permissions, search="s" in permissions)
    return None


def _is_v2(permissions: str) -> bool:
    """``cruds`` letters, each at most once and in that order (SMART v2)."""
    positions = [_V2_ORDER.find(letter) for letter in permissions]
    return bool(permissions) and -1 not in positions and positions == sorted(set(positions))


def grants(scope: str, resource_type: str, interaction: Interaction) -> bool:
    """Whether the space-separated ``scope`` lets the token ``read`` or ``search`` the type."""
    for token in scope.split():
        grant = parse_scope(token)
        if grant is None or grant.resource_type not in (resource_type, "*"):
            continue
        if grant.read if interaction == "read" else grant.search:
            return True
    return False


def missing_grant(scope: str, resource_type: str, interaction: Interaction) -> str | None:
    """A short reason naming the lacking grant, or None when the scope grants the interaction."""
    if grants(scope, resource_type, interaction):
        return None
    letter = "r" if interaction == "read" else "s"
    return f"fhirAuthorization.scope grants no {interaction} of {resource_type} (e.g. patient/{resource_type}.{letter})"
