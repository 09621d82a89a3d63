"""The host columns kept between rounds (broker.placement.host_table) say what columns made afresh say, whatever
sequence of changes led there; and a frame made from them solves the same as one made from the hosts."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import placement
from broker.placement import engine
from broker.placement.host_table import HostColumns, HostTable, host_columns
from broker.placement.validate import validate_solution
from loadtest import synthetic

SITES = ("site-a", "site-b", "site-c")
CLASSES = ("rtx4080", "rtx4090")
GAMES = ("g1", "g2", "g3")


def _decoded(hosts: list[placement.Host], cols: HostColumns) -> list[tuple[object, ...]]:
    """Each host's columns as plain values (names, not their numbers), beside the host they came from."""
    assert cols.n_hosts == len(hosts)
    return [
        (
            h.id,
            cols.sites[int(cols.site[i])] == h.site_id,
            cols.classes[int(cols.gpu_class[i])] == h.gpu_class,
            cols.gamesets[int(cols.games[i])] == (h.games, h.images),
            int(cols.price[i]) == h.price_micros,
            int(cols.free[i]) == h.free_slots,
            int(cols.total[i]) == h.total_slots,
            bool(cols.usable[i]) == (h.online and not h.drained),
        )
        for i, h in enumerate(hosts)
    ]


@st.composite
def _host(draw: st.DrawFn) -> placement.Host:
    total = draw(st.integers(1, 8))
    return placement.Host(
        id=f"h{draw(st.integers(0, 12))}",
        site_id=draw(st.sampled_from(SITES)),
        gpu_class=draw(st.sampled_from(CLASSES)),
        free_slots=draw(st.integers(0, total)),
        total_slots=total,
        price_micros=draw(st.integers(0, 5_000_000)),
        games=frozenset(draw(st.sets(st.sampled_from(GAMES)))),
        drained=draw(st.booleans()),
        online=draw(st.booleans()),
    )


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _host()),
        st.tuples(st.just("remove"), st.integers(0, 12).map(lambda i: f"h{i}")),
        st.tuples(st.just("replace"), st.lists(_host(), max_size=6, unique_by=lambda h: h.id)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OPS)
def test_kept_columns_match_columns_made_afresh_after_any_changes(ops: list[tuple[str, object]]) -> None:
    table = HostTable()
    expected: dict[str, placement.Host] = {}
    for i, (op, arg) in enumerate(ops):
        if op == "put":
            assert isinstance(arg, placement.Host)
            table.put(arg)
            expected[arg.id] = arg
        elif op == "remove":
            assert isinstance(arg, str)
            table.remove(arg)
            expected.pop(arg, None)
        else:
            assert isinstance(arg, list)
            table.replace(arg)
            expected = {h.id: h for h in arg}
        hosts, cols = table.snapshot()
        assert sorted(h.id for h in hosts) == sorted(expected)
        assert all(expected[h.id] is h for h in hosts)
        decoded = _decoded(hosts, cols)
        assert all(all(flags) for _, *flags in decoded), (i, decoded)
        assert len(table) == len(expected)
        assert all(h in table for h in expected)


def test_a_snapshot_is_not_changed_by_later_changes() -> None:
    a = placement.Host("a", "site-a", "rtx4080", 2, 4, 100, frozenset({"g1"}))
    b = placement.Host("b", "site-b", "rtx4090", 1, 2, 200, frozenset())
    table = HostTable()
    table.replace([a, b])
    hosts, cols = table.snapshot()
    table.remove("a")
    table.put(placement.Host("b", "site-b", "rtx4090", 0, 2, 300, frozenset()))
    assert [h.id for h in hosts] == ["a", "b"]
    assert cols.free.tolist() == [2, 1] and cols.price.tolist() == [100, 200]


def test_a_frame_from_kept_columns_solves_as_one_from_the_hosts() -> None:
    inst = synthetic.generate(seed=3, hosts=600, sites=12, venues=40, requests=300)
    table = HostTable()
    table.replace(inst.hosts[:400])
    for host in inst.hosts[400:]:
        table.put(host)
    for host in inst.hosts[::7]:
        table.remove(host.id)
    hosts, cols = table.snapshot()
    requests = [
        placement.Request(
            id=t.id,
            venue_id=t.venue_id,
            game_id=t.game_id,
            cap_ms=t.cap_ms,
            target_ms=t.cap_ms,
            arrival_ms=t.arrival_ms,
            slots=t.slots,
        )
        for t in inst.requests[:120]
    ]
    given_cols = placement.Problem(requests, hosts, inst.latency, inst.leases, inst.params, host_columns=cols)
    made = placement.Problem(requests, hosts, inst.latency, inst.leases, inst.params)
    fresh = host_columns(hosts)
    assert _decoded(hosts, fresh) == _decoded(hosts, cols)
    a, b = engine.solve(given_cols), engine.solve(made)
    # The names are numbered differently, so among equally cheap hosts the two may pick different ones.
    assert a.cost_micros == b.cost_micros
    assert len(a.assignments) == len(b.assignments) > 0
    assert validate_solution(given_cols, a) == []
