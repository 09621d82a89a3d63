"""The placement lease's decision: when a replica takes the lease, and whose connection it ends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.leader import Leadership, LeaseState, Take, decide

ME, OTHER = "host-a/10/aaaa", "host-b/20/bbbb"
MY_PID, OTHER_PID = 1001, 2002


def lease(
    holder: str = OTHER, *, pid: int = OTHER_PID, expired: bool = False, connected: bool = True
) -> LeaseState:
    return LeaseState(holder=holder, term=7, backend_pid=pid, expired=expired, holder_connected=connected)


def test_a_lease_never_taken_is_free() -> None:
    assert decide(lease("", pid=0, expired=True, connected=False), ME, MY_PID) == Take(end_backend=None)


def test_a_live_holder_keeps_the_lease() -> None:
    assert decide(lease(), ME, MY_PID) is None


def test_an_expired_lease_is_taken_and_the_frozen_holders_connection_ended() -> None:
    assert decide(lease(expired=True), ME, MY_PID) == Take(end_backend=OTHER_PID)


def test_a_holder_whose_connection_is_gone_loses_the_lease_before_it_expires() -> None:
    """A killed leader: its connection closed with it, so the lease is free at once (no connection to end)."""
    assert decide(lease(connected=False), ME, MY_PID) == Take(end_backend=None)


def test_a_replica_retakes_its_own_lease_after_losing_its_connection() -> None:
    assert decide(lease(ME, pid=999, connected=False), ME, MY_PID) == Take(end_backend=None)
    # Its old connection still open (it lost track of it): ended, so nothing renews the old term.
    assert decide(lease(ME, pid=999), ME, MY_PID) == Take(end_backend=999)
    assert decide(lease(ME, pid=MY_PID), ME, MY_PID) == Take(end_backend=None)


@given(
    holder=st.sampled_from(["", ME, OTHER]),
    pid=st.sampled_from([0, MY_PID, OTHER_PID]),
    expired=st.booleans(),
    connected=st.booleans(),
)
def test_taken_only_when_free_and_never_ending_ones_own_connection(
    holder: str, pid: int, expired: bool, connected: bool
) -> None:
    state = lease(holder, pid=pid, expired=expired, connected=connected)
    take = decide(state, ME, MY_PID)
    held_by_another = holder == OTHER and not expired and connected
    assert (take is None) == held_by_another
    if take is not None and take.end_backend is not None:
        assert take.end_backend == pid and connected and pid not in (0, MY_PID)


def test_the_lease_is_renewed_more_often_than_it_expires() -> None:
    with pytest.raises(ValueError):
        Leadership("postgresql://unused", list, ttl_s=1.0, renew_s=1.0)
