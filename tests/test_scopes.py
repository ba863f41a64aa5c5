"""``fhirAuthorization.scope`` read as SMART v1 or v2 (CDS Hooks 3.0 clients send v2)."""

from __future__ import annotations

import pytest
from cds_hooks.reading.scopes import Interaction, grants


@pytest.mark.parametrize(
    ("scope", "resource_type", "interaction", "granted"),
    [
        pytest.param("patient/Observation.rs", "Observation", "search", True, id="v2-rs-search"),
        pytest.param("patient/Observation.rs", "Observation", "read", True, id="v2-rs-read"),
        pytest.param("patient/Observation.r", "Observation", "search", False, id="v2-r-is-not-search"),
        pytest.param("patient/Observation.s", "Observation", "read", False, id="v2-s-is-not-read"),
        pytest.param("patient/Observation.cruds", "Observation", "search", True, id="v2-cruds"),
        pytest.param("patient/Observation.cud", "Observation", "read", False, id="v2-write-letters-only"),
        pytest.param("patient/Observation.sr", "Observation", "read", False, id="v2-letters-out-of-order-ignored"),
        pytest.param("patient/Observation.rs?category=laboratory", "Observation", "search", True, id="v2-narrowed"),
        pytest.param("patient/Observation.read", "Observation", "search", True, id="v1-read-covers-search"),
        pytest.param("patient/Observation.*", "Observation", "read", True, id="v1-star"),
        pytest.param("patient/Observation.write", "Observation", "read", False, id="v1-write-only"),
        pytest.param("user/*.rs", "MedicationAdministration", "search", True, id="v2-user-wildcard"),
        pytest.param("system/*.read", "Patient", "read", True, id="v1-system-wildcard"),
        pytest.param("patient/Patient.rs", "Observation", "search", False, id="other-type"),
        pytest.param("launch openid fhirUser", "Observation", "search", False, id="no-resource-scope"),
        pytest.param("", "Observation", "read", False, id="empty"),
        pytest.param("launch patient/Patient.r patient/Observation.s", "Observation", "search", True, id="several"),
    ],
)
def test_scope_grants(scope: str, resource_type: str, interaction: Interaction, granted: bool) -> None:
    assert grants(scope, resource_type, interaction) is granted
