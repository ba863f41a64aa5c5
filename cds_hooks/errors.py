"""Errors a hook call can end in, each with the HTTP status a CDS client can act on.

ServiceError            base: status + a short reason safe to show (no data, no token)
  BadRequest            400: the request is not JSON or not a CDS Hooks request
  UnknownService        404: no service with that id
  PreconditionFailed    412: required data neither prefetched nor fetchable (CDS Hooks 2.0)
  PayloadTooLarge       413: body over the configured limit

ConfigurationError      not a hook error: unsafe or incomplete settings; the service must not start
"""

from __future__ import annotations


class ServiceError(Exception):
    status = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(ServiceError):
    status = 400


class UnprocessableRequest(ServiceError):
    status = 422


class UnknownService(ServiceError):
    status = 404


class PreconditionFailed(ServiceError):
    status = 412


class PayloadTooLarge(ServiceError):
    status = 413


class ConfigurationError(Exception):
    """The settings are unsafe or incomplete: the service must not start.

    Here rather than in ``web/app.py`` so the CLI can catch it without importing the web stack.
    """
