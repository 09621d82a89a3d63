"""broker.enrolment: which registrations bind a host, keep it bound, move it, or are refused."""

from __future__ import annotations

import pytest
from cloudseat.errors import PermissionDenied

from broker.enrolment import Binding, Claim, Outcome, decide

CLAIM = Claim("h1", "prov", "site-a", "rtx")


@pytest.mark.parametrize(
    ("bound", "enrolled", "required", "outcome"),
    [
        (None, Binding("prov", "site-a"), True, Outcome.FIRST),
        (None, Binding("prov", "site-a", "rtx"), True, Outcome.FIRST),
        (None, None, False, Outcome.FIRST),  # authentication off: nothing proves the host, nothing to ask
        (Binding("prov", "site-a"), None, True, Outcome.SAME),
        (Binding("prov", "site-b"), Binding("prov", "site-a"), True, Outcome.MOVED),
        (Binding("prov", "site-b"), None, False, Outcome.MOVED),
    ],
)
def test_registrations_that_bind(
    bound: Binding | None, enrolled: Binding | None, required: bool, outcome: Outcome
) -> None:
    assert decide(CLAIM, bound, enrolled, enrolment_required=required) is outcome


@pytest.mark.parametrize(
    ("bound", "enrolled", "required", "field"),
    [
        (None, None, True, "register.host_id"),  # nobody enrolled it
        (None, Binding("other", "site-a"), True, "register.host_id"),  # another provider did
        (None, Binding("prov", "site-b"), True, "register.site_id"),
        (None, Binding("prov", "site-a", "a100"), True, "register.inventory.gpu_class"),
        (Binding("other", "site-a"), Binding("prov", "site-a"), True, "register.provider_id"),
        (Binding("other", "site-a"), None, False, "register.provider_id"),  # bound, even without authentication
        (Binding("prov", "site-b"), None, True, "register.site_id"),  # a move its provider did not enrol
        (Binding("prov", "site-b"), Binding("prov", "site-b"), True, "register.site_id"),
    ],
)
def test_registrations_refused_name_the_field(
    bound: Binding | None, enrolled: Binding | None, required: bool, field: str
) -> None:
    with pytest.raises(PermissionDenied) as refused:
        decide(CLAIM, bound, enrolled, enrolment_required=required)
    assert refused.value.message.startswith(field + ":")
