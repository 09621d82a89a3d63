"""The fleet load test's arrivals: the evening-peak curve and the schedules drawn from it (pure, seeded)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from loadtest import fleet_venues as fv

SEATS = [40, 120, 80, 10]
GAMES = [1.0, 0.5, 0.25]


def test_the_curve_peaks_in_the_evening_and_is_zero_outside_it() -> None:
    hours = np.linspace(0, fv.EVENING_HOURS, 801)
    curve = fv.intensity(hours)
    assert curve.max() == pytest.approx(1.0)
    assert np.all(curve > 0)
    # 20:00-21:00 is the top; the small hours are quiet.
    assert fv.intensity(2.5) == pytest.approx(1.0)
    assert fv.intensity(7.5) < 0.3 < fv.intensity(0.5)
    assert fv.intensity([-1.0, 8.5]).tolist() == [0.0, 0.0]


def test_cumulative_is_the_integral_of_the_curve() -> None:
    hours = np.linspace(0, fv.EVENING_HOURS, 20_001)
    numeric = np.concatenate(
        [[0.0], np.cumsum(np.diff(hours) * (fv.intensity(hours)[1:] + fv.intensity(hours)[:-1]) / 2)]
    )
    assert np.allclose(fv.cumulative(hours), numeric, atol=1e-6)
    assert fv.cumulative(-3.0) == 0.0
    assert fv.cumulative(99.0) == pytest.approx(fv.cumulative(fv.EVENING_HOURS))
    assert 0.5 < fv.mean_intensity() < 1.0


def test_evening_arrivals_follow_the_curve() -> None:
    arrivals = fv.evening_arrivals(np.random.default_rng(7), peak_per_hour=20_000)
    expected = 20_000 * float(fv.cumulative(fv.EVENING_HOURS))
    assert abs(arrivals.size - expected) < 5 * np.sqrt(expected)
    assert np.all(np.diff(arrivals) >= 0)
    assert arrivals.min() >= 0 and arrivals.max() <= fv.EVENING_HOURS
    per_hour = np.histogram(arrivals, bins=8, range=(0, 8))[0]
    # Each hour's share matches the curve's integral over that hour.
    share = np.diff(fv.cumulative(np.arange(9))) / fv.cumulative(8.0)
    assert np.allclose(per_hour / arrivals.size, share, atol=0.01)
    assert np.array_equal(arrivals, fv.evening_arrivals(np.random.default_rng(7), peak_per_hour=20_000))


def test_session_lengths_are_one_to_three_hours_mostly() -> None:
    hours = fv.session_hours(np.random.default_rng(1), 50_000)
    assert hours.min() >= fv.SESSION_MIN_H and hours.max() <= fv.SESSION_MAX_H
    assert np.median(hours) == pytest.approx(fv.SESSION_MEDIAN_H, rel=0.02)
    assert hours.mean() == pytest.approx(fv.SESSION_MEAN_H, rel=0.02)
    assert 0.6 < np.mean((hours >= 1) & (hours <= 3)) < 0.99


def test_poisson_arrivals_have_the_rate_asked_for() -> None:
    at = fv.poisson_arrivals(np.random.default_rng(3), 500.0, 20.0)
    assert abs(at.size - 10_000) < 500
    assert np.all(np.diff(at) >= 0) and at.min() >= 0 and at.max() <= 20.0


def test_a_peak_schedule_fills_the_seats_to_the_peak_occupancy() -> None:
    seats = [200, 600, 400, 50]
    s = fv.peak_schedule(np.random.default_rng(11), seats=seats, game_weights=GAMES, duration_s=60.0)
    assert s.compression == pytest.approx(8 * 3600 / 60)
    assert s.at_s.min() >= 0 and s.at_s.max() <= 60.0
    # Little's law at the peak: the sessions running then hold about peak_occupancy of the seats.
    grid = np.linspace(0, 60, 601)
    running = [np.sum((s.at_s <= t) & (s.at_s + s.duration_s > t)) for t in grid]
    assert 0.75 * sum(seats) < max(running) < 1.0 * sum(seats)
    # Real session lengths, compressed like the evening.
    assert np.median(s.duration_s) == pytest.approx(fv.SESSION_MEDIAN_H * 3600 / s.compression, rel=0.05)


def test_a_rate_schedule_spreads_arrivals_over_venues_by_seats() -> None:
    s = fv.rate_schedule(
        np.random.default_rng(5),
        rate_per_s=400.0,
        seats=SEATS,
        game_weights=GAMES,
        duration_s=30.0,
        mean_session_s=8.0,
        multi_share=0.1,
    )
    assert len(s) == pytest.approx(12_000, rel=0.05)
    assert s.duration_s.mean() == pytest.approx(8.0, rel=0.05)
    share = np.bincount(s.venue, minlength=len(SEATS)) / len(s)
    assert np.allclose(share, np.array(SEATS) / sum(SEATS), atol=0.02)
    games = np.bincount(s.game, minlength=len(GAMES)) / len(s)
    assert np.allclose(games, np.array(GAMES) / sum(GAMES), atol=0.02)
    assert set(np.unique(s.slots).tolist()) == {1, 2}
    assert np.mean(s.slots == 2) == pytest.approx(0.1, abs=0.02)
    sub = s.subset(s.venue == 1)
    assert len(sub) == int(np.sum(s.venue == 1)) and np.all(sub.venue == 1)


def test_bad_schedule_arguments_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        fv.peak_schedule(rng, seats=SEATS, game_weights=GAMES, duration_s=0)
    with pytest.raises(ValueError):
        fv.peak_schedule(rng, seats=SEATS, game_weights=GAMES, duration_s=10, peak_occupancy=1.5)
    with pytest.raises(ValueError):
        fv.rate_schedule(rng, rate_per_s=0, seats=SEATS, game_weights=GAMES, duration_s=10, mean_session_s=1)


def test_the_curve_needs_no_grpc_or_database() -> None:
    code = (
        "import sys, numpy as np; from loadtest import fleet_venues as fv; "
        "fv.peak_schedule(np.random.default_rng(1), seats=[5], game_weights=[1], duration_s=5); "
        "print(sorted(m for m in ('grpc', 'asyncpg', 'cloudseat.client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
