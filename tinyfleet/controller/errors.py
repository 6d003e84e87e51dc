"""Errors of the controller. Each class carries the HTTP status and a short machine-readable code the
API answers with, so a handler raises and the API edge translates; the CLI maps them to exit codes.

    ControllerError                                               (terminal unless said otherwise)
     +-- InvalidRequest        400  bad input: a selector, an amount, a reference, a name
     +-- Unauthorized          401  missing or wrong API token
     +-- Forbidden             403  a browser's state change from another origin (CSRF)
     +-- NotFound              404  no such device, release or rollout
     +-- Conflict              409  valid, but not now (a rollout of that app is already active,
     |                              a finished rollout cannot be paused)
     +-- ReleaseRefused        422  the image cannot be released to this fleet
     |    +-- OverBudget            a needed platform's image is over --max-bytes
     |    +-- PlatformMissing       a platform the fleet runs has no image in the index
     |    +-- ImageNotFound         the registry has no such repository, tag or digest
     +-- RegistryFailed        502  the registry refused us (credentials) or sent something broken
     +-- RegistryUnavailable   503  the registry could not be reached         (transient: retry)
     +-- StoreError                 the database is unusable (newer schema, corrupt file)
"""

from __future__ import annotations


class ControllerError(Exception):
    status = 500
    code = "internal"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ControllerError, ValueError):
    status = 400
    code = "invalid_request"


class Unauthorized(ControllerError):
    status = 401
    code = "unauthorized"


class Forbidden(ControllerError):
    status = 403
    code = "forbidden"


class NotFound(ControllerError):
    status = 404
    code = "not_found"


class Conflict(ControllerError):
    status = 409
    code = "conflict"


class ReleaseRefused(ControllerError):
    status = 422
    code = "release_refused"


class OverBudget(ReleaseRefused):
    code = "over_budget"


class PlatformMissing(ReleaseRefused):
    code = "platform_missing"


class ImageNotFound(ReleaseRefused):
    code = "image_not_found"


class RegistryFailed(ControllerError):
    status = 502
    code = "registry_failed"


class RegistryUnavailable(ControllerError):
    status = 503
    code = "registry_unavailable"
    retryable = True


class StoreError(ControllerError):
    code = "store"
