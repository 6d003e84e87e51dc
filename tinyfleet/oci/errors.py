"""Errors of the oci package. `retryable` tells the caller what to do: True means a passing fault
(retry with backoff), False means retrying the same request cannot succeed (report it and wait for a
new desired state or for the operator).

    OciError
     +-- ReferenceError          an image reference does not parse           (terminal)
     +-- RegistryError
          +-- TransportError     connection refused/reset, timeout, 5xx      (transient)
          +-- NotFound           repository, tag, manifest or blob missing   (terminal)
          +-- Unauthorized       401/403 after authenticating                (terminal)
          +-- DigestMismatch     bytes received do not hash to the digest    (terminal)
          +-- UnsupportedMediaType  not a manifest or index we understand    (terminal)
          +-- ManifestTooLarge   manifest bigger than the cap                (terminal)
     +-- PlatformMissing         the index has no entry for the board        (terminal)
     +-- OverBudget              compressed size above the budget            (terminal)
     +-- PackError               bad input to the packer                     (terminal)
"""

from __future__ import annotations


class OciError(Exception):
    retryable = False


class ImageReferenceError(OciError, ValueError):
    pass


class RegistryError(OciError):
    pass


class TransportError(RegistryError):
    retryable = True


class NotFound(RegistryError):
    pass


class Unauthorized(RegistryError):
    pass


class DigestMismatch(RegistryError):
    def __init__(self, reference: str, expected: str, actual: str) -> None:
        super().__init__(f"{reference}: registry sent content hashing to {actual}, not the requested "
                         f"{expected}; the registry or something in between altered it - refusing it")
        self.expected = expected
        self.actual = actual


class UnsupportedMediaType(RegistryError):
    pass


class ManifestTooLarge(RegistryError):
    pass


class PlatformMissing(OciError):
    pass


class OverBudget(OciError):
    def __init__(self, message: str, size: int, budget: int) -> None:
        super().__init__(message)
        self.size = size
        self.budget = budget


class PackError(OciError):
    pass
