"""Whether a host's registration may bind it (or keep it bound) to a provider and site. Pure.

A host joins a provider only if the provider enrolled it (FleetService.EnrolHosts: the host id, or a prefix of host
ids, into one of its sites, optionally for one GPU class). The first registration binds the host to that provider and
site; every later registration must agree with the binding. A host moves to another site of its provider only when
the provider enrols it there. With authentication off (--insecure) nothing proves which host an agent is, so the
enrolment is not asked for: the first registration binds, and later ones must still agree on the provider.
"""

from __future__ import annotations

import dataclasses
import enum

from cloudseat.errors import PermissionDenied


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """What a registration says: this host, of this provider, in this site, with this GPU class."""

    host_id: str
    provider_id: str
    site_id: str
    gpu_class: str


@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    """What a host is bound to (its row), or what an enrolment admits (gpu_class '' : any)."""

    provider_id: str
    site_id: str
    gpu_class: str = ""


class Outcome(enum.StrEnum):
    FIRST = "host.register"  # the first registration: the host is bound now
    SAME = "host.reconnect"  # as bound
    MOVED = "host.move"  # bound again, to the site its provider enrolled it in since


def decide(
    claim: Claim, bound: Binding | None, enrolled: Binding | None, *, enrolment_required: bool
) -> Outcome:
    """The outcome of a registration, or PermissionDenied (naming the field that disagrees) to refuse it."""
    if bound is not None:
        if bound.provider_id != claim.provider_id:
            raise PermissionDenied(
                f"register.provider_id: host {claim.host_id!r} is bound to another provider"
            )
        if bound.site_id == claim.site_id:
            return Outcome.SAME
        if not enrolment_required or (enrolled is not None and _admits(enrolled, claim)):
            return Outcome.MOVED
        raise PermissionDenied(
            f"register.site_id: host {claim.host_id!r} is bound to site {bound.site_id!r}; its provider must enrol "
            "it in the new site first"
        )
    if not enrolment_required:
        return Outcome.FIRST
    if enrolled is None or enrolled.provider_id != claim.provider_id:
        raise PermissionDenied(
            f"register.host_id: host {claim.host_id!r} is not enrolled by provider {claim.provider_id!r}"
        )
    if enrolled.site_id != claim.site_id:
        raise PermissionDenied(
            f"register.site_id: host {claim.host_id!r} is not enrolled in site {claim.site_id!r}"
        )
    if not _admits(enrolled, claim):
        raise PermissionDenied(
            f"register.inventory.gpu_class: host {claim.host_id!r} is enrolled for GPU class {enrolled.gpu_class!r}"
        )
    return Outcome.FIRST


def _admits(enrolled: Binding, claim: Claim) -> bool:
    return (
        enrolled.provider_id == claim.provider_id
        and enrolled.site_id == claim.site_id
        and enrolled.gpu_class in ("", claim.gpu_class)
    )
