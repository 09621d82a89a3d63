"""A region file read into values: the example parses, and every refusal names the path of the bad value."""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudseat.errors import InvalidArgument
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import leasing, metering
from broker.region import cli, model

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "region.yaml"


def example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    return doc


def test_the_example_region_reads_whole() -> None:
    region = cli.read(EXAMPLE)
    assert [p.provider_id for p in region.providers] == ["sh-edge", "hz-cloud"]
    pudong = region.sites[0]
    assert (pudong.site_id, pudong.provider_id, pudong.hosts) == ("sh-pudong", "sh-edge", ("pilot-sh-01",))
    assert region.sites[1].host_prefixes == ("jd-",)
    price = pudong.prices[0]
    assert (price.gpu_class, price.currency, price.base_micros, price.utc_offset_minutes) == (
        "rtx4090",
        "CNY",
        4_500_000,
        480,
    )
    # 23:00-02:00 passes midnight: stored as the servicer stores it (end 120 < start 1380).
    assert price.bands == (
        metering.Band(1080, 1380, 6_800_000),
        metering.Band(1380, 120, 5_200_000),
        metering.Band(120, 540, 2_400_000),
    )
    assert [(g.game_id, g.version) for g in region.games] == [("demo", ""), ("arena", "3")]
    venue = region.venues[0]
    assert venue.time_zone == "Asia/Shanghai"
    assert [(s.seat_id, s.zone_id) for s in venue.seats] == [
        *((f"a-{i:02d}", "standard") for i in range(1, 7)),
        ("e-01", "esports"),
        ("e-02", "esports"),
    ]
    assert {lat.site_id: lat.rtt_ms for lat in venue.latencies} == {
        "sh-pudong": 4,
        "sh-jiading": 9,
        "hz-xihu": 18,
    }
    # The esports zone names its playout mode; the standard zone leaves it out (keeps the zone's).
    assert [(z.zone_id, z.playout) for z in venue.zones] == [("standard", None), ("esports", "LOW_LATENCY")]
    lease = venue.leases[0]
    assert lease.daily == leasing.Daily(18 * 60, 8 * 60)
    assert (lease.days, lease.starts_at, lease.time_zone, lease.price_micros) == (
        90,
        None,
        "Asia/Shanghai",
        3_800_000,
    )


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`doc` with the value at a dotted path (list indexes as [i]) replaced; the key removed for value DELETE."""
    out = copy.deepcopy(doc)
    node: Any = out
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    key: Any = int(last[1:-1]) if last.startswith("[") else last
    if value is DELETE:
        del node[key]
    elif isinstance(node, list) and key == len(node):
        node.append(value)
    else:
        node[key] = value
    return out


DELETE = object()
P = "providers[0].sites[0].prices[0]"
P1 = "providers[0].sites[0].prices[1]"

# (path to set, value, the error's path, words of its problem)
BAD: list[tuple[str, Any, str, str]] = [
    ("providers[0].id", "", "providers[0].id", "is required"),
    ("providers[0].id", "-x", "providers[0].id", "must be 1-64"),
    ("providers[0].id", 7, "providers[0].id", "must be text"),
    ("providers[0].name", DELETE, "providers[0].name", "is required"),
    ("providers[0].nmae", "x", "providers[0].nmae", "unknown key"),
    ("providers[0].sites", {"id": "x"}, "providers[0].sites", "must be a list"),
    ("providers[0].sites[0]", "sh-pudong", "providers[0].sites[0]", "must be a mapping"),
    ("providers[0].sites[0].place", "a\x00b", "providers[0].sites[0].place", "control characters"),
    ("providers[0].sites[0].region", "r" * 65, "providers[0].sites[0].region", "at most 64"),
    ("providers[0].sites[0].hosts[0]", 5, "providers[0].sites[0].hosts[0]", "must be a host id"),
    ("providers[0].sites[0].hosts[0]", "-bad", "providers[0].sites[0].hosts[0]", "must be 1-64"),
    ("providers[0].sites[1].host_prefix", "jd", "providers[0].sites[1].host_prefix", "at least 3"),
    (f"{P}.gpu_class", DELETE, f"{P}.gpu_class", "is required"),
    (f"{P}.currency", "yuan", f"{P}.currency", "ISO 4217"),
    (f"{P}.per_slot_hour", DELETE, f"{P}.per_slot_hour", "is required"),
    (f"{P}.per_slot_hour", "4.5000001", f"{P}.per_slot_hour", "six decimals"),
    (f"{P}.per_slot_hour", "-1", f"{P}.per_slot_hour", "at least 0"),
    (f"{P}.per_slot_hour", "four", f"{P}.per_slot_hour", "not an amount"),
    (f"{P}.per_slot_hour", "NaN", f"{P}.per_slot_hour", "finite"),
    (f"{P}.per_slot_hour", True, f"{P}.per_slot_hour", "an amount"),
    (f"{P}.utc_offset", "8", f"{P}.utc_offset", "UTC offset"),
    (f"{P}.utc_offset", "+15:00", f"{P}.utc_offset", "between"),
    (f"{P}.bands[0].from", 1080, f"{P}.bands[0].from", "in quotes"),
    (f"{P}.bands[0].from", "25:00", f"{P}.bands[0].from", "HH:MM"),
    (f"{P}.bands[0].from", "24:00", f"{P}.bands[0].from", "HH:MM"),
    (f"{P}.bands[0].to", "18:00", f"{P}.bands[0].to", "must differ"),
    (f"{P}.bands[0].to", DELETE, f"{P}.bands[0].to", "is required"),
    (f"{P}.bands[1].from", "22:00", f"{P}.bands[1]", "overlaps"),
    (f"{P}.bands[0].price", "1", f"{P}.bands[0].price", "unknown key"),
    (f"{P1}.gpu_class", "rtx4090", f"{P1}.gpu_class", "declared twice"),
    ("providers[1].id", "sh-edge", "providers[1].id", "declared twice"),
    ("providers[1].sites[0].id", "sh-pudong", "providers[1].sites[0].id", "declared twice"),
    ("providers[0].sites[1].hosts", ["pilot-sh-01"], "providers[0].sites[1].hosts", "declared twice"),
    ("games[0].name", DELETE, "games[0].name", "is required"),
    ("games[1].version", 3, "", ""),  # a number reads as its text: no error
    ("games[1].version", [3], "games[1].version", "version id"),
    ("games[1].image_size_bytes", -1, "games[1].image_size_bytes", "at least 0"),
    ("games[1].image_size_bytes", "big", "games[1].image_size_bytes", "whole number"),
    ("games[1].image_ref", "registry/arena:latest", "games[1].image_ref", "REPOSITORY@sha256"),
    ("games[1].id", "demo", "games[1].id", "declared twice"),
    ("venues[0].time_zone", "Asia/Atlantis", "venues[0].time_zone", "unknown time zone"),
    ("venues[0].time_zone", 8, "venues[0].time_zone", "IANA"),
    ("venues[0].zones[0].cap_ms", 0, "venues[0].zones[0].cap_ms", "must be at least 1"),
    ("venues[0].zones[1].cap_ms", 501, "venues[0].zones[1].cap_ms", "must be at most 500"),
    ("venues[0].zones[0].cap_ms", "30", "venues[0].zones[0].cap_ms", "whole number"),
    ("venues[0].zones[0].tier", "4K", "venues[0].zones[0].tier", "must be one of 720P30"),
    ("venues[0].zones[1].playout", "FAST", "venues[0].zones[1].playout", "must be one of AUTO, LOW_LATENCY, SMOOTH"),
    ("venues[0].zones[1].playout", "smooth", "venues[0].zones[1].playout", "must be one of AUTO"),  # case as tier
    ("venues[0].zones[1].playout", "PLAYOUT_MODE_SMOOTH", "venues[0].zones[1].playout", "must be one of AUTO"),
    ("venues[0].zones[0].playout", 2, "venues[0].zones[0].playout", "must be one of AUTO"),
    ("venues[0].zones[0].playout", "SMOOTH", "", ""),  # a zone that had none may name one
    ("venues[0].zones[1].playout", None, "", ""),  # `playout:` with nothing after it is left out
    ("venues[0].zones[1].id", "standard", "venues[0].zones[1].id", "declared twice"),
    ("venues[0].zones[0].seats", "a-01", "venues[0].zones[0].seats", "must be a list"),
    ("venues[0].zones[0].seats[0]", "a-06..a-01", "venues[0].zones[0].seats[0]", "run upwards"),
    ("venues[0].zones[0].seats[0]", "a-1..a-99999", "venues[0].zones[0].seats[0]", "at most 10000"),
    ("venues[0].zones[1].seats[0]", "a-02", "venues[0].zones[1].seats[0]", "declared twice"),
    ("venues[0].zones[1].seats[0]", 1, "venues[0].zones[1].seats[0]", "seat id or a range"),
    ("venues[0].latency_ms", [4], "venues[0].latency_ms", "must map site ids"),
    ("venues[0].latency_ms.sh-pudong", -1, "venues[0].latency_ms.sh-pudong", "at least 0"),
    ("venues[0].latency_ms.sh-pudong", 4.5, "venues[0].latency_ms.sh-pudong", "whole number"),
    ("venues[0].leases[0].slots", 0, "venues[0].leases[0].slots", "at least 1"),
    ("venues[0].leases[0].days", 400, "venues[0].leases[0].days", "at most 366"),
    (
        "venues[0].leases[0].ends_at",
        "2027-01-01T00:00:00+08:00",
        "venues[0].leases[0].ends_at",
        "exactly one",
    ),
    ("venues[0].leases[0].daily", {"from": "18:00"}, "venues[0].leases[0].daily.to", "is required"),
    ("venues[0].leases[0].daily", "18-02", "venues[0].leases[0].daily", "must be a mapping"),
    ("venues[0].leases[0].per_slot_hour", DELETE, "venues[0].leases[0].per_slot_hour", "is required"),
    ("venues[0].leases[0].site", DELETE, "venues[0].leases[0].site", "is required"),
    ("venues[0].leases[0].time_zone", "Nowhere/Else", "venues[0].leases[0].time_zone", "unknown time zone"),
    ("venues[0].leases[0].kind", "x", "venues[0].leases[0].kind", "unknown key"),
    ("venues[1]", {"id": "pilot-cafe", "name": "Again"}, "venues[1].id", "declared twice"),
    ("regions", [], "regions", "unknown key"),
]


@pytest.mark.parametrize(
    ("path", "value", "where", "words"), BAD, ids=[f"{p}={v!r}"[:60] for p, v, _, _ in BAD]
)
def test_a_bad_value_is_refused_naming_its_path(path: str, value: Any, where: str, words: str) -> None:
    doc = _set(example(), path, value)
    if not where:
        model.parse(doc)
        return
    with pytest.raises(InvalidArgument) as refused:
        model.parse(doc)
    assert refused.value.field == where, refused.value.message
    assert words in refused.value.message


def test_the_playout_modes_are_the_apis_names() -> None:
    # The model imports no protobuf: its list is held to PlayoutMode's here (the names PutZone stores).
    from broker.rpc import convert

    assert set(model.PLAYOUT_MODES) == set(convert.PLAYOUT_TO_PB)


def test_a_zone_without_playout_keeps_its_mode_and_one_with_it_names_it() -> None:
    doc = _set(example(), "venues[0].zones[0].playout", "SMOOTH")
    doc = _set(doc, "venues[0].zones[1].playout", DELETE)
    zones = model.parse(doc).venues[0].zones
    assert [z.playout for z in zones] == ["SMOOTH", None]


def test_a_lease_term_given_by_dates_is_checked() -> None:
    lease = example()["venues"][0]["leases"][0]
    del lease["days"]
    at = "venues[0].leases[0]"
    for starts, ends, where, words in [
        (None, "2027-01-01T00:00:00+08:00", f"{at}.starts_at", "is required with ends_at"),
        (
            "2027-02-01T00:00:00+08:00",
            "2027-01-01T00:00:00+08:00",
            f"{at}.ends_at",
            f"must be after {at}.starts_at",
        ),
        ("2026-01-01T00:00:00+08:00", "2027-06-01T00:00:00+08:00", f"{at}.ends_at", "at most 366 days"),
        ("2026-12-01T00:00:00", "2027-01-01T00:00:00+08:00", f"{at}.starts_at", "UTC offset"),
        ("soon", "2027-01-01T00:00:00+08:00", f"{at}.starts_at", "not a date"),
        (20261201, "2027-01-01T00:00:00+08:00", f"{at}.starts_at", "must be a date"),
    ]:
        doc = example()
        doc["venues"][0]["leases"][0] = {**lease, "ends_at": ends} | ({"starts_at": starts} if starts else {})
        with pytest.raises(InvalidArgument) as refused:
            model.parse(doc)
        assert (refused.value.field, words in refused.value.message) == (where, True), refused.value.message


def test_a_lease_date_is_midnight_in_the_leases_time_zone() -> None:
    doc = example()
    lease = doc["venues"][0]["leases"][0]
    del lease["days"]
    lease["starts_at"] = dt.date(2026, 12, 1)  # as YAML reads an unquoted 2026-12-01
    lease["ends_at"] = "2027-03-01T00:00:00+08:00"
    parsed = model.parse(doc).venues[0].leases[0]
    assert parsed.starts_at == dt.datetime(2026, 11, 30, 16, 0, tzinfo=dt.UTC)
    assert parsed.ends_at == dt.datetime(2027, 2, 28, 16, 0, tzinfo=dt.UTC)


def test_money_takes_text_or_numbers_exactly() -> None:
    assert model.money("4.50", "p") == 4_500_000
    assert model.money(4.5, "p") == 4_500_000
    assert model.money(4, "p") == 4_000_000
    assert model.money("0.000001", "p") == 1


def test_an_empty_or_non_mapping_file_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="is empty"):
        model.parse(None)
    with pytest.raises(InvalidArgument, match="must be a mapping"):
        model.parse(["providers"])


def test_a_file_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("venues:\n  - id: cafe\n    name: [unclosed\n")
    with pytest.raises(InvalidArgument) as refused:
        cli.read(bad)
    assert refused.value.field.startswith(f"{bad}:line ")
    assert "not YAML" in refused.value.message


def test_yaml_tags_that_build_objects_are_refused(tmp_path: Path) -> None:
    # safe_load only: a tag that would run Python is a YAML error, not an object.
    bad = tmp_path / "tag.yaml"
    bad.write_text("providers: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(InvalidArgument, match="not YAML"):
        cli.read(bad)


def _paths(node: Any, prefix: str = "") -> list[str]:
    """Every value's path in a parsed document, as _set takes them."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, f"{prefix}[{i}]")
    return out


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        ["", "18:00", "24:00", "+08:00", "a-01..a-03", "CNY", "720P60", "2026-12-01", "Asia/Shanghai"]
    ),
    st.dates(),
    st.datetimes(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_value_anywhere_parses_or_is_refused_by_its_path(data: st.DataObject) -> None:
    doc = example()
    paths = _paths(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _set(doc, data.draw(st.sampled_from(paths)), data.draw(JUNK))
        paths = _paths(doc) or paths
    try:
        model.parse(doc)
    except InvalidArgument as refused:
        # The path of something in the file (or the file itself), then what is wrong with it.
        assert refused.field and refused.message.startswith(f"{refused.field}: ")
        head = re.split(r"[.\[]", refused.field, maxsplit=1)[0]
        assert head in ("providers", "games", "venues")
