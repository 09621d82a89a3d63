from __future__ import annotations

import datetime as dt
import uuid

import pytest
from cloudseat import validate as v
from cloudseat.errors import InvalidArgument
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize("good", ["a", "seat-01", "cafe.sh:3", "A_b-9", "x" * 64])
def test_ids_accepted(good: str) -> None:
    assert v.ident(good, "seat_id") == good


@pytest.mark.parametrize("bad", ["-a", "a b", "x" * 65, "a/b", "é", "a\x00", ".hidden"])
def test_ids_refused_with_the_field_named(bad: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        v.ident(bad, "seat_id")
    assert e.value.field == "seat_id"
    assert str(e.value).startswith("seat_id: ")


def test_missing_fields() -> None:
    with pytest.raises(InvalidArgument, match="venue_id: is required"):
        v.ident("", "venue_id")
    assert v.ident("", "patron_id", required=False) == ""
    with pytest.raises(InvalidArgument, match="request_id: is required"):
        v.request_id("")


def test_text_refuses_control_characters_and_length() -> None:
    assert v.text("Café Nº1", "name") == "Café Nº1"
    with pytest.raises(InvalidArgument, match="control"):
        v.text("a\x07b", "name")
    with pytest.raises(InvalidArgument, match="at most 5"):
        v.text("abcdef", "name", max_len=5)


def test_session_id() -> None:
    sid = uuid.uuid4()
    assert v.session_id(str(sid)) == sid
    with pytest.raises(InvalidArgument, match="session_id: must be"):
        v.session_id("not-a-uuid")


def test_sdp() -> None:
    assert v.sdp("offer", "v=0\r\n", "offer", expect="offer") == ("offer", "v=0\r\n")
    with pytest.raises(InvalidArgument, match=r"offer\.type"):
        v.sdp("answer", "v=0\r\n", "offer", expect="offer")
    with pytest.raises(InvalidArgument, match=r"offer\.sdp: is not an SDP"):
        v.sdp("offer", "hello", "offer", expect="offer")
    with pytest.raises(InvalidArgument, match=r"offer\.sdp: must be at most"):
        v.sdp("offer", "v=0" + "a" * v.MAX_SDP_BYTES, "offer", expect="offer")


def test_period_names_the_callers_fields_and_keeps_their_words() -> None:
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert v.period(t0, t0 + dt.timedelta(days=366)) == (t0, t0 + dt.timedelta(days=366))
    with pytest.raises(InvalidArgument, match=r"^end: must be after start$"):
        v.period(t0, t0)
    with pytest.raises(InvalidArgument, match=r"^end: must be at most 366 days after start$"):
        v.period(t0, t0 + dt.timedelta(days=366, microseconds=1))
    with pytest.raises(InvalidArgument, match=r"^ends_at: must be after starts_at$"):
        v.period(t0, t0 - dt.timedelta(seconds=1), fields=("starts_at", "ends_at"))
    with pytest.raises(InvalidArgument, match=r"^end: the period may be at most 31 days$"):
        v.period(t0, t0 + dt.timedelta(days=32), max_days=31, too_long="the period may be at most 31 days")
    # Whole days (the console's statements).
    day = dt.date(2025, 1, 1)
    assert v.period(day, day + dt.timedelta(days=366), fields=("from", "to")) == (day, dt.date(2026, 1, 2))
    with pytest.raises(InvalidArgument, match=r"^to: must be at most 366 days after from$"):
        v.period(day, day + dt.timedelta(days=367), fields=("from", "to"))


@given(st.text(max_size=200))
def test_any_string_is_accepted_or_refused_cleanly(s: str) -> None:
    for check in (
        lambda: v.ident(s, "f"),
        lambda: v.request_id(s, "f"),
        lambda: v.text(s, "f"),
        lambda: v.session_id(s, "f"),
        lambda: v.token(s, "f"),
        lambda: v.sdp("offer", s, "f", expect="offer"),
    ):
        try:
            check()
        except InvalidArgument as exc:
            assert str(exc).startswith("f")


@given(st.integers(min_value=-(2**64), max_value=2**64))
def test_int_range(n: int) -> None:
    try:
        assert 0 <= v.int_range(n, "n", 0, 10) <= 10
    except InvalidArgument as exc:
        assert exc.field == "n"
