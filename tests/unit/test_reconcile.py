"""What the broker does when an agent (re)connects: plan_reconcile, pure."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from broker import lifecycle
from broker.lifecycle import EndReason, State
from broker.reconcile import Held, Reconciliation, plan_reconcile

HOST = "host-1"


def test_nothing_to_do_when_both_sides_agree() -> None:
    held = [Held("a", State.READY, HOST), Held("b", State.STREAMING, HOST)]
    plan = plan_reconcile(HOST, held, [("a", State.READY), ("b", State.STREAMING)])
    assert plan == Reconciliation()
    assert not plan


def test_a_placed_session_the_agent_does_not_run_is_started() -> None:
    plan = plan_reconcile(HOST, [Held("a", State.PLACED, HOST)], [])
    assert plan == Reconciliation(starts=("a",))


def test_a_session_the_agent_runs_further_along_is_advanced_one_step_at_a_time() -> None:
    held = [Held("a", State.PLACED, HOST), Held("b", State.STARTING, HOST), Held("c", State.PLACED, HOST)]
    plan = plan_reconcile(HOST, held, [("a", State.STREAMING), ("b", State.READY), ("c", State.STARTING)])
    assert plan.advances == (
        ("a", State.STARTING),
        ("a", State.READY),
        ("a", State.STREAMING),
        ("b", State.READY),
        ("c", State.STARTING),
    )
    assert plan.starts == plan.stops == plan.ends == ()


def test_a_late_or_odd_state_from_the_agent_moves_nothing() -> None:
    held = [Held("a", State.STREAMING, HOST), Held("b", State.PLACED, HOST), Held("c", State.READY, HOST)]
    plan = plan_reconcile(HOST, held, [("a", State.STARTING), ("b", None), ("c", State.ENDED)])
    assert plan == Reconciliation()


def test_a_session_past_placed_that_the_agent_does_not_run_is_ended() -> None:
    held = [
        Held("a", State.STARTING, HOST),
        Held("b", State.READY, HOST),
        Held("c", State.STREAMING, HOST),
        Held("d", State.PLACED, HOST),
    ]
    plan = plan_reconcile(HOST, held, [])
    assert plan.ends == ("a", "b", "c")
    assert plan.starts == ("d",)


def test_what_the_agent_runs_but_the_broker_ended_is_stopped_with_its_real_reason() -> None:
    held = [
        Held("patron", State.ENDED, HOST, EndReason.ENDED_BY_PATRON),
        Held("venue", State.ENDED, HOST, EndReason.ENDED_BY_VENUE),
        Held("elsewhere", State.READY, "host-2"),
        Held("pending", State.PENDING, None),
    ]
    running = [(sid, State.READY) for sid in ("patron", "venue", "elsewhere", "pending", "unknown")]
    plan = plan_reconcile(HOST, held, running)
    assert plan.stops == (
        ("patron", EndReason.ENDED_BY_PATRON),
        ("venue", EndReason.ENDED_BY_VENUE),
        ("elsewhere", EndReason.HOST_LOST),
        ("pending", EndReason.HOST_LOST),
        ("unknown", EndReason.HOST_LOST),
    )
    assert plan.starts == plan.advances == plan.ends == ()


def test_a_full_host_is_told_to_stop_the_ended_and_start_the_newly_placed() -> None:
    held = [
        Held("old-1", State.ENDED, HOST, EndReason.ENDED_BY_PATRON),
        Held("old-2", State.ENDED, HOST, EndReason.ENDED_BY_PATRON),
        Held("new-1", State.PLACED, HOST),
        Held("new-2", State.PLACED, HOST),
    ]
    plan = plan_reconcile(HOST, held, [("old-1", State.READY), ("old-2", State.READY)])
    assert [sid for sid, _ in plan.stops] == ["old-1", "old-2"]
    assert plan.starts == ("new-1", "new-2")


# -- properties ----------------------------------------------------------------------------------------------------

IDS = [f"s{i}" for i in range(6)]
held_sessions = st.lists(
    st.builds(
        Held,
        st.sampled_from(IDS),
        st.sampled_from(list(State)),
        st.sampled_from([HOST, "host-2", None]),
        st.one_of(st.none(), st.sampled_from(list(EndReason))),
    ),
    max_size=6,
    unique_by=lambda h: h.session_id,
)
claims = st.lists(
    st.tuples(st.sampled_from([*IDS, "not-a-session"]), st.one_of(st.none(), st.sampled_from(list(State)))),
    max_size=8,
)


@given(held_sessions, claims)
def test_every_session_on_either_side_is_dealt_with_once(
    held: list[Held], running: list[tuple[str, State | None]]
) -> None:
    plan = plan_reconcile(HOST, held, running)
    claimed = {sid for sid, _ in running}
    live_here = {h.session_id for h in held if h.host_id == HOST and h.state in lifecycle.ON_HOST}
    stopped = [sid for sid, _ in plan.stops]
    # The agent stops exactly what it runs that is not live on its host, once each.
    assert sorted(stopped) == sorted(claimed - live_here)
    # What is live here and not run there is started (PLACED) or ended (further along), never both.
    assert set(plan.starts) | set(plan.ends) == live_here - claimed
    assert not set(plan.starts) & set(plan.ends)
    by_id = {h.session_id: h for h in held}
    assert all(by_id[sid].state is State.PLACED for sid in plan.starts)
    # Advances touch only sessions live here that the agent runs, and each is a legal single step.
    for sid, steps in itertools.groupby(plan.advances, key=lambda a: a[0]):
        assert sid in live_here & claimed
        current = by_id[sid].state
        for _, to in steps:
            assert lifecycle.advance(current, to) == lifecycle.Move(current, to)
            current = to
        assert current is dict(running)[sid]
