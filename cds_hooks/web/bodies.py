"""Request bodies read with a size limit and checked for shape before any route logic runs.

Why streamed: a declared ``Content-Length`` can lie or be absent (chunked), so the limit is
enforced on the bytes actually read; a 413 or 400 with a short reason, never a 500.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from pydantic import ValidationError

from cds_hooks.cds import CdsRequest
from cds_hooks.errors import BadRequest, PayloadTooLarge, UnprocessableRequest


async def read_json_body(request: Request, limit: int) -> Any:
    """The JSON body, refusing oversize (413) and malformed (400) input with a short reason."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    if not body:
        raise BadRequest("request body is empty; a JSON object is required")
    try:
        return orjson.loads(body)  # orjson reads the bytearray in place: no copy of a multi-MB body
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None


async def read_hook_request(request: Request, limit: int) -> CdsRequest:
    """A CDS Hooks request: 400 for a body that is not a JSON object, 422 for a wrong shape."""
    payload = await read_json_body(request, limit)
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return CdsRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UnprocessableRequest(f"invalid CDS Hooks request at '{where}': {first['msg']}") from None
