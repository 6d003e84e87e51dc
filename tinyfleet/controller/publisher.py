"""Desired states: materialise one document per device from its assignments, and publish it retained.

Generation rule: every new document for a device carries a generation strictly above both the last one
stored for it and the newest one the device reports having accepted. The first keeps increasing across
controller restarts (it is committed with the document before anything is sent); the second covers a
store restored from an old backup, or a device that remembers more than the store does - the agent
ignores anything not newer than what it accepted, so we must move above it.

Every document is signed by the controller's key (controller.signing); boards refuse any other.

Documents are sent after the transaction that stored them commits. Two threads may commit documents
for the same device and send them in the opposite order; `send` drops a document older than one
already sent, so the retained message is always the newest.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import structlog

from tinyfleet.controller.model import Release
from tinyfleet.controller.signing import Signer
from tinyfleet.controller.store import Store
from tinyfleet.protocol import topics
from tinyfleet.protocol.codec import decode, encode
from tinyfleet.protocol.messages import DesiredState

log = structlog.get_logger("controller.publisher")
Send = Callable[[str, bytes], None]  # (topic, payload): retained, QoS 1, must not block on the network


def next_generation(stored: int, reported: int) -> int:
    return max(stored, reported) + 1


def document(device_id: str, generation: int, releases: Iterable[Release], now: float) -> DesiredState:
    return DesiredState(device_id=device_id, generation=generation,
                        apps=tuple(sorted((r.spec() for r in releases), key=lambda s: s.name)),
                        issued_at=round(now, 3))


class Publisher:
    def __init__(self, store: Store, send: Send, signer: Signer, clock: Callable[[], float] = time.time,
                 on_sent: Callable[[int], None] = lambda n: None) -> None:
        self.store = store
        self.signer = signer
        self._send = send
        self.clock = clock
        self.on_sent = on_sent
        self._sent: dict[str, int] = {}
        self._lock = threading.Lock()

    def materialise_many(self, device_ids: Sequence[str],
                         force: Sequence[str] | None = None) -> list[tuple[str, int, bytes]]:
        """Build and store the next document of each device: (device id, generation, document), ready to
        send. Call inside the caller's transaction and send the result after it commits. `force` names the
        apps to update whatever their update lock says (empty: all of the device's apps); it goes with this
        generation only - the next document the device gets lets its locks hold again."""
        if not device_ids:
            return []
        now = self.clock()
        with self.store.transaction():
            inputs = self.store.desired_inputs_many(device_ids)
            documents = []
            for device_id in device_ids:
                stored, reported, releases = inputs[device_id]
                generation = next_generation(stored, reported)
                desired = document(device_id, generation, releases, now)
                if force is not None:
                    desired = replace(desired, force=tuple(sorted(set(force) or {a.name for a in desired.apps})))
                documents.append((device_id, generation, encode(desired, self.signer.sign(desired))))
            self.store.save_desired_many(documents)
        return documents

    def force(self, device_id: str, apps: Sequence[str] = ()) -> tuple[int, tuple[str, ...]]:
        """`tinyfleet device update --force`: the device's desired state again, at a new generation, with a
        force marker for `apps` (all when empty). Returns the generation and the apps forced."""
        (item,) = self.materialise_many([device_id], force=apps)
        self.send([item])
        forced = decode(item[2], DesiredState).force  # type: ignore[union-attr]
        log.info("desired state republished with force", device=device_id, generation=item[1], apps=list(forced))
        return item[1], forced

    def send(self, items: Iterable[tuple[str, int, bytes]]) -> int:
        sent = 0
        with self._lock:
            for device_id, generation, payload in items:
                if generation < self._sent.get(device_id, 0):
                    continue  # a newer document for this device went out already
                self._sent[device_id] = generation
                self._send(topics.desired(device_id), payload)
                sent += 1
        self.on_sent(sent)
        return sent

    def flush(self, limit: int = 10_000) -> int:
        """Materialise and send every device whose assignments changed (or whose report is ahead of
        its stored generation) since its last document."""
        total = 0
        while True:
            with self.store.transaction():
                ids = self.store.devices_needing_publish(limit)
                batch = self.materialise_many(ids)
            total += self.send(batch) if batch else 0
            if len(ids) < limit:
                return total

    def republish_all(self) -> int:
        """Send every stored document again, byte for byte (same generation: the agent treats it as a
        harmless re-delivery). Run on each broker (re)connection, so a broker that lost its retained
        messages gets them back. Documents signed by an earlier key (before a rotation) are signed again
        first, same generation and body: a board provisioned with the new key alone would refuse them."""
        documents = self.store.desired_payloads()
        stale = [(d, g, p) for d, g, p in documents if _key_id(p) != self.signer.public.key_id]
        if stale:
            fresh = {d: (d, g, self._resign(p)) for d, g, p in stale}
            self.store.replace_desired_payloads(list(fresh.values()))
            documents = [fresh.get(d, (d, g, p)) for d, g, p in documents]
            log.info("signed the stored desired states again with the current key", documents=len(stale),
                     key_id=self.signer.public.key_id)
        return self.send(documents)

    def _resign(self, payload: bytes) -> bytes:
        desired = decode(payload, DesiredState)
        assert isinstance(desired, DesiredState)
        return encode(desired, self.signer.sign(desired))


def _key_id(payload: bytes) -> str | None:
    sig = json.loads(payload).get("sig")
    return sig.get("key_id") if isinstance(sig, dict) else None

