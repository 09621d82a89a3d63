"""`--site-loss SITE@SECONDS`: the value parsed, and which site `auto` picks."""

from __future__ import annotations

import pytest

from loadtest import fleet_siteloss
from loadtest.fleet_siteloss import SiteLoss


@pytest.mark.parametrize(
    ("text", "loss"),
    [
        ("site-007@12.5", SiteLoss("site-007", 12.5)),
        ("auto@20", SiteLoss(None, 20.0)),
        (" auto@0 ", SiteLoss(None, 0.0)),
        ("a@b@3", SiteLoss("a@b", 3.0)),
    ],
)
def test_site_at_seconds_is_parsed(text: str, loss: SiteLoss) -> None:
    assert SiteLoss.parse(text) == loss


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("site-007", "SITE@SECONDS"),
        ("@5", "SITE@SECONDS"),
        ("site-007@soon", "'soon' is not a number"),
        ("site-007@-1", "0 or more"),
        ("site-007@nan", "0 or more"),
    ],
)
def test_a_bad_site_loss_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        SiteLoss.parse(text)


def test_auto_picks_the_site_holding_the_most_and_the_first_of_equals() -> None:
    sites = ("site-000", "site-001", "site-002")
    assert fleet_siteloss.pick({"site-001": 5, "site-002": 9}, sites) == "site-002"
    assert fleet_siteloss.pick({"site-002": 4, "site-001": 4}, sites) == "site-001"
    assert fleet_siteloss.pick({"elsewhere": 50}, sites) is None
    assert fleet_siteloss.pick({}, sites) is None
