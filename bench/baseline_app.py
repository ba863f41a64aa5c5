"""The benchmark's floor: a bare FastAPI endpoint that does only what any hook service must.

It reads the request body, parses it with ``orjson.loads`` (the parser the service itself uses, so
the comparison is fair) and answers one fixed card. Whatever the service costs beyond this app is
its own work: validation, extraction, grading, cards and the card store. Run it with
``python -m bench.baseline_app --port N``: the launcher calls ``uvicorn.run`` with exactly the
arguments ``crs-cds serve`` uses (one worker, default loop, the header-limited httptools protocol,
no log config, no access log: ``cds_hooks.web.server.uvicorn_options``), so both servers run under
the same uvicorn settings.
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import uvicorn
from cds_hooks.web.server import uvicorn_options
from fastapi import FastAPI, Request
from fastapi.responses import Response

FIXED_CARD = orjson.dumps(
    {
        "cards": [
            {
                "uuid": "00000000-0000-4000-8000-000000000000",
                "summary": "CRS grade 3 (ASTCT 2019)",
                "indicator": "critical",
                "detail": "Fixed benchmark card: the baseline does no grading.",
                "source": {"label": "CRS grading baseline"},
            }
        ]
    }
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """The same start-up step the service takes: freeze long-lived objects out of the collector."""
    gc.freeze()
    yield


app = FastAPI(title="CRS benchmark baseline", docs_url=None, redoc_url=None, lifespan=lifespan)


@app.get("/healthz", include_in_schema=False)
async def healthz() -> Response:
    return Response(content=b'{"status":"ok"}', media_type="application/json")


@app.post("/cds-services/{service_id}")
async def call_service(service_id: str, request: Request) -> Response:
    """Parse the whole body as the service does, then answer the same fixed card."""
    payload = orjson.loads(await request.body())
    if not isinstance(payload, dict) or service_id != "crs-grade":
        return Response(content=b'{"error":"bad request"}', status_code=400, media_type="application/json")
    return Response(content=FIXED_CARD, media_type="application/json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="serve the benchmark baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    # The same call as cds_hooks.cli._cmd_serve (parser, header limit, no log config, no access log):
    # do not add workers, loop or http options here.
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
