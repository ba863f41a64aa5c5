"""What every HTTP answer of the service looks like: JSON by orjson, errors as a short
OperationOutcome (what the next CDS Hooks release proposes), never a stack trace."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse

_ISSUE_CODE = {
    400: "invalid",
    401: "login",
    404: "not-found",
    412: "incomplete",
    413: "too-long",
    422: "required",
    431: "too-long",
}


def error_body(status: int, reason: str) -> dict[str, Any]:
    """A short OperationOutcome whose ``diagnostics`` is the reason safe to show (no data, no token)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": _ISSUE_CODE.get(status, "exception"), "diagnostics": reason}],
    }


class OrjsonResponse(JSONResponse):
    """JSON rendered by orjson: the card bodies are large and this is on every call's path."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
