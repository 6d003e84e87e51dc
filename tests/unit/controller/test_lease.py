"""The rollout engine's lease against the real databases: one holder at a time on PostgreSQL, taken
over once the holder's connection is gone; on SQLite the one controller always holds it."""

from __future__ import annotations

from tests.support.wait import eventually
from tinyfleet.controller.dialect import Location
from tinyfleet.controller.lease import Lease
from tinyfleet.controller.store import Store


def test_one_controller_at_a_time_holds_the_lease_and_another_takes_it_when_it_goes(store_url: str) -> None:
    Store(store_url).close()  # the database as a controller leaves it
    first, second = Lease(Location.parse(store_url)), Lease(Location.parse(store_url))
    if Location.parse(store_url).kind == "sqlite":
        assert first.held() and second.held()  # one controller per file: nothing to share
        return
    assert first.held() and not second.held()
    assert first.held(), "held on every pass, not taken again"
    first.release()  # as a killed controller's connection closes with it
    # the server lets the lock go once that connection's backend has exited: at the next pass, not at once
    eventually(second.held, timeout=5, interval=0.05, what="the lease taken by the second")
    assert not first.held()
    first.release()
    second.release()


def test_different_keys_are_different_leases(postgres) -> None:  # type: ignore[no-untyped-def]
    url = postgres.url()
    a, b = Lease(Location.parse(url), key=1), Lease(Location.parse(url), key=2)
    assert a.held() and b.held()
    a.release()
    b.release()
