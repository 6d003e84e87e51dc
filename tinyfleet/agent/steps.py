"""The steps a plan is made of. Each names one I/O action; the executor has one `do_<kind>` per
class and makes no decisions of its own."""

from __future__ import annotations

from dataclasses import dataclass

from tinyfleet.protocol import AppSpec, Phase


@dataclass(frozen=True)
class Verify:
    """Fetch and verify the pinned index, pick this board's manifest, check the size budget."""
    app: str
    image: str
    budget: int | None


@dataclass(frozen=True)
class Pull:
    app: str
    image: str
    pull_ref: str
    platform: str


@dataclass(frozen=True)
class Create:
    app: str
    spec: AppSpec
    generation: int
    pull_ref: str
    name: str


@dataclass(frozen=True)
class Start:
    app: str
    container_id: str
    candidate: bool = False  # a new spec's first start: a refusal fails the spec; otherwise it is retried


@dataclass(frozen=True)
class Stop:
    app: str
    container_id: str


@dataclass(frozen=True)
class Restart:
    app: str
    container_id: str


@dataclass(frozen=True)
class Remove:
    app: str
    container_id: str


@dataclass(frozen=True)
class RecordFailure:
    app: str
    spec_hash: str
    image: str
    phase: Phase
    reason: str


@dataclass(frozen=True)
class Promote:
    """Remember that this spec's container was judged good; from now on it is monitored, not judged."""
    app: str
    spec_hash: str


@dataclass(frozen=True)
class HoldForLock:
    """Remember when the app's update lock first held back this spec (the release's max wait runs from then)."""
    app: str
    spec_hash: str


@dataclass(frozen=True)
class ClearFailure:
    app: str


@dataclass(frozen=True)
class Forget:
    """Drop the memory of an app that is no longer desired."""
    app: str


@dataclass(frozen=True)
class RemoveImage:
    pull_ref: str


# Steps whose refusal by the engine means the desired spec cannot work here (recorded as failed, not retried
# until the spec changes). A refusal of any other step - restarting a container that ran fine, removing
# one - is treated as passing and retried with backoff.
def judges_the_spec(step: object) -> bool:
    return isinstance(step, Verify | Pull | Create) or (isinstance(step, Start) and step.candidate)


# Steps that change only what the agent remembers: after them the next plan can stand on the same look
# at the engine (each look is several API calls, slow on a Pi Zero).
def leaves_the_engine_alone(step: object) -> bool:
    return isinstance(step, Verify | RecordFailure | Promote | ClearFailure | Forget | HoldForLock)


Step = (Verify | Pull | Create | Start | Stop | Restart | Remove | RecordFailure | Promote | ClearFailure | Forget
        | RemoveImage | HoldForLock)
