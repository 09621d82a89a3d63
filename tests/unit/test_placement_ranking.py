"""The option ranking (broker/placement/ranking.py) against a plain restatement of what it promises.

Issue 19's sixth pass builds the packed keys branch-free in the latency matrix's own buffer and partitions them in
place, so the keys' order within a row is no longer the columns'. What a cut returns must not change: per group,
its options (within its latency target, with open slots for its signature) ranked by cost rounded down to the
ranking's quantum, then by column; kept up to and including the whole quantum of the option where the slots reach
the need (all of them where they never do); listed by group, then column. Hypothesis draws matrices wider than the
ranking's sorted top (so its partition, its whole-row fallback and its rows compared whole all run), costs that
round (a quantum above 1, with the latency weight a whole number of quanta or not) and costs too wide for 32 bits.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.placement.frame import I64
from broker.placement.ranking import OptionRanking

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _reference(
    col_lat: I64,
    target: I64,
    price: I64,
    lam: int,
    col_bucket: I64,
    col_extra: I64,
    slots: I64,
    sig: I64,
    need: I64,
) -> tuple[list[tuple[int, int]], list[bool]]:
    """(group, column) of every kept option, by group then column, and per group whether any was left out."""
    n_groups, n_cols = col_lat.shape
    bits = max(1, (n_cols - 1).bit_length())
    max_cost = int(price.max()) + lam * int(target.max()) + int(col_extra.max())
    wide = max_cost >= (1 << 31) - 1 or bits > 20
    levels = (1 << ((63 if wide else 31) - bits)) - 1
    shift = (max_cost // levels).bit_length()
    kept: list[tuple[int, int]] = []
    pruned: list[bool] = []
    for g in range(n_groups):
        options = sorted(
            (
                (int(price[col_bucket[c]]) + lam * int(col_lat[g, c]) + int(col_extra[c])) >> shift,
                c,
            )
            for c in range(n_cols)
            if col_lat[g, c] <= target[g] and slots[sig[g], c] > 0
        )
        limit = None
        total = 0
        for rounded, c in options:
            total += int(slots[sig[g], c])
            if total >= need[g]:
                limit = rounded
                break
        chosen = sorted(c for rounded, c in options if limit is None or rounded <= limit)
        kept.extend((g, c) for c in chosen)
        pruned.append(len(chosen) < len(options))
    return kept, pruned


@st.composite
def rankings(draw: st.DrawFn) -> tuple[I64, ...]:
    n_groups = draw(st.integers(1, 6))
    n_buckets = draw(st.integers(1, 70))
    n_cols = draw(st.integers(1, 120))
    n_sig = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([1_000, 1 << 20, 1 << 26, 1 << 33]))
    lam = draw(st.sampled_from([20_000, 3 * scale, 3 * scale + 1, 1]))
    ints = st.integers
    price = np.array(draw(st.lists(ints(0, 3 * scale), min_size=n_buckets, max_size=n_buckets)), dtype=np.int64)
    col_bucket = np.array(
        draw(st.lists(ints(0, n_buckets - 1), min_size=n_cols, max_size=n_cols)), dtype=np.int64
    )
    col_extra = np.array(draw(st.lists(st.sampled_from([0, 400_000, scale]), min_size=n_cols, max_size=n_cols)))
    target = np.array(draw(st.lists(ints(0, 20), min_size=n_groups, max_size=n_groups)), dtype=np.int64)
    lat_values = st.one_of(ints(0, 25), st.just(np.iinfo(np.int32).max))
    col_lat = np.array(
        draw(st.lists(lat_values, min_size=n_groups * n_cols, max_size=n_groups * n_cols)), dtype=np.int32
    ).reshape(n_groups, n_cols)
    slots = np.array(
        draw(st.lists(ints(0, 4), min_size=n_sig * n_cols, max_size=n_sig * n_cols)), dtype=np.int64
    ).reshape(n_sig, n_cols)
    sig = np.array(draw(st.lists(ints(0, n_sig - 1), min_size=n_groups, max_size=n_groups)), dtype=np.int64)
    need = np.array(draw(st.lists(ints(1, 300), min_size=n_groups, max_size=n_groups)), dtype=np.int64)
    return col_lat, target, price, np.int64(lam), col_bucket, col_extra.astype(np.int64), slots, sig, need


@PROPERTY
@given(rankings())
def test_cut_keeps_each_groups_cheapest_options_in_group_then_column_order(args: tuple[I64, ...]) -> None:
    col_lat, target, price, lam, col_bucket, col_extra, slots, sig, need = args
    want, want_pruned = _reference(col_lat, target, price, int(lam), col_bucket, col_extra, slots, sig, need)
    ranking = OptionRanking(col_lat.copy(), target, price, int(lam), col_bucket, col_extra, slots, sig)
    group, column, pruned = ranking.cut(need)
    assert list(zip(group.tolist(), column.tolist(), strict=True)) == want
    assert pruned.tolist() == want_pruned
    # a second cut from the same ranking (the keys were partitioned in place by the first build) agrees too
    again = ranking.cut(need)
    assert again[0].tolist() == group.tolist() and again[1].tolist() == column.tolist()
