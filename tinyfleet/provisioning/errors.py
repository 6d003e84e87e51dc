"""Errors of the provisioning package. `retryable` tells the caller what to do: True means a passing
fault (a dropped console, a busy device: try again), False means the same input cannot succeed.

    ProvisioningError
     +-- ImageError              not an image we can read, no boot partition      (terminal)
     |    +-- TruncatedImage     the image (or its archive) ends too early         (terminal)
     +-- FatError                mtools refused an edit of the FAT boot partition  (terminal)
     +-- TargetError             target refused: mounted, the running system, ...  (terminal)
     +-- VerifyFailed            read-back hash differs from what was written      (terminal)
     +-- ConsoleError            the serial console                                 (transient)
     |    +-- ConsoleClosed      the line dropped while we talked                   (transient)
     +-- StepFailed              a step on the board failed or timed out           (terminal)
          +-- LoginFailed        login incorrect, no password for the prompt, ...  (terminal)
     +-- CredentialError         bad device id, unreadable password file, ...      (terminal)
"""

from __future__ import annotations


class ProvisioningError(Exception):
    retryable = False


class ImageError(ProvisioningError):
    pass


class TruncatedImage(ImageError):
    pass


class FatError(ProvisioningError):
    pass


class TargetError(ProvisioningError):
    pass


class VerifyFailed(ProvisioningError):
    pass


class ConsoleError(ProvisioningError):
    retryable = True


class ConsoleClosed(ConsoleError):
    pass


class StepFailed(ProvisioningError):
    """A named step on the board failed; `seen` is the (redacted) tail of what the console showed."""

    def __init__(self, step: str, problem: str, seen: str = "") -> None:
        tail = seen.strip()[-600:]
        super().__init__(f"step '{step}': {problem}" + (f"\n--- console showed last ---\n{tail}" if tail else ""))
        self.step = step
        self.problem = problem
        self.seen = tail


class LoginFailed(StepFailed):
    pass


class CredentialError(ProvisioningError):
    pass
