"""broker.threats: which refusals are watched, and when one peer's raise an alert."""

from __future__ import annotations

from cloudseat import errors

from broker.threats import Policy, Watch, kind_of, peer_host


def test_kinds() -> None:
    assert kind_of(errors.Unauthenticated("authorization: x"), "/cloudseat.v1.FleetService/GetHost") == "refused_token"
    agent = "/cloudseat.v1.AgentService/Connect"
    assert kind_of(errors.PermissionDenied("register.host_id: x"), agent) == "refused_registration"
    assert kind_of(errors.Concealed("host_id: no host 'h'"), "/cloudseat.v1.FleetService/GetHost") == "cross_tenant"
    assert kind_of(errors.PermissionDenied("venue_id: x"), "/api/venues/x/seats") == "cross_tenant"
    assert kind_of(errors.NotFound("host_id: no host 'h'"), "/cloudseat.v1.FleetService/GetHost") is None
    assert kind_of(errors.InvalidArgument("x", "y"), "/x") is None


def test_peer_host_drops_the_port() -> None:
    assert peer_host("ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7"
    assert peer_host("ipv6:[::1]:5") == "ipv6:[::1]"
    assert peer_host("unix:/tmp/s") == "unix:/tmp/s"


def test_one_alert_per_window_per_peer_and_kind() -> None:
    watch = Watch(Policy(window_s=60, threshold=3))
    raised = [watch.note("refused_token", f"ipv4:1.2.3.4:{port}", t) for port, t in enumerate((0, 1, 2, 3, 4))]
    assert [a is not None for a in raised] == [False, False, True, False, False]
    assert raised[2] is not None and (raised[2].peer, raised[2].events) == ("ipv4:1.2.3.4", 3)
    # Another peer, another kind: counted apart.
    assert watch.note("refused_token", "ipv4:5.6.7.8:1", 5) is None
    assert watch.note("cross_tenant", "ipv4:1.2.3.4:1", 5) is None
    # Events older than the window no longer count; once the window has passed it may alert again.
    assert watch.note("refused_token", "ipv4:1.2.3.4:9", 100) is None
    assert watch.note("refused_token", "ipv4:1.2.3.4:9", 101) is None
    assert watch.note("refused_token", "ipv4:1.2.3.4:9", 102) is not None
