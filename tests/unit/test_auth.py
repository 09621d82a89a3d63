"""Tenant tokens, the authorisation rules, rate limits and certificate identities (broker.auth, guard, tls)."""

from __future__ import annotations

import base64
import datetime
import json
from pathlib import Path

import jwt
import pytest
from cloudseat import tls
from cloudseat.errors import Concealed, NotFound, PermissionDenied, ResourceExhausted, Unauthenticated

from broker import auth
from broker.guard import Guard, Limits, RateLimiter

KEY = auth.new_signing_key()
ISSUER = auth.TokenIssuer(KEY)
VERIFIER = auth.TokenVerifier([KEY.public_key()])


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_each_role_round_trips_with_its_claims() -> None:
    seat = VERIFIER.verify(ISSUER.issue(auth.Role.SEAT, ttl_s=60, venue_id="cafe", seat_id="s1"))
    assert (seat.role, seat.venue_id, seat.seat_id, seat.subject) == (
        auth.Role.SEAT,
        "cafe",
        "s1",
        "seat:cafe/s1",
    )
    patron = VERIFIER.verify(ISSUER.patron("sess-1", "cafe", "s1"))
    assert patron.session_id == "sess-1" and patron.tenant == "venue:cafe"
    provider = VERIFIER.verify(ISSUER.issue(auth.Role.PROVIDER, ttl_s=60, provider_id="p"))
    assert provider.tenant == "provider:p"


@pytest.mark.parametrize(
    ("role", "claims", "problem"),
    [
        (auth.Role.SEAT, {"venue_id": "cafe"}, "needs seat_id"),
        (auth.Role.VENUE, {"venue_id": "cafe", "provider_id": "p"}, "carries no provider_id"),
        (auth.Role.AGENT, {}, "certificates"),
    ],
)
def test_issuer_refuses_malformed_claims(role: auth.Role, claims: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ISSUER.issue(role, ttl_s=60, **claims)


def test_expired_foreign_and_forged_tokens_are_refused() -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    expired = ISSUER.issue(auth.Role.VENUE, ttl_s=60, venue_id="cafe", now=past)
    with pytest.raises(Unauthenticated, match="expired"):
        VERIFIER.verify(expired)
    other = auth.TokenIssuer(auth.new_signing_key()).issue(auth.Role.OPERATOR, ttl_s=60)
    with pytest.raises(Unauthenticated, match="signature"):
        VERIFIER.verify(other)
    # Algorithm pinned: an unsigned token and an HMAC token are refused whatever they claim.
    claims = {"iss": "cloudseat", "aud": "cloudseat", "sub": "x", "role": "operator", "iat": 1, "exp": 2**40}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(Unauthenticated):
        VERIFIER.verify(unsigned)
    hmac_token = jwt.encode(claims, "a-shared-secret-of-thirty-two-bytes!", algorithm="HS256")
    with pytest.raises(Unauthenticated, match="EdDSA"):
        VERIFIER.verify(hmac_token)
    wrong_audience = jwt.encode({**claims, "aud": "someone-else"}, KEY, algorithm="EdDSA")
    with pytest.raises(Unauthenticated, match="audience"):
        VERIFIER.verify(wrong_audience)
    agent_claim = jwt.encode({**claims, "role": "agent"}, KEY, algorithm="EdDSA")
    with pytest.raises(Unauthenticated, match="certificate"):
        VERIFIER.verify(agent_claim)


def test_rotation_accepts_old_and_new_keys() -> None:
    new = auth.new_signing_key()
    both = auth.TokenVerifier([new.public_key(), KEY.public_key()])
    assert both.verify(ISSUER.issue(auth.Role.OPERATOR, ttl_s=60)).role is auth.Role.OPERATOR
    assert both.verify(auth.TokenIssuer(new).issue(auth.Role.OPERATOR, ttl_s=60)).role is auth.Role.OPERATOR


def test_tenants_stay_in_their_lane() -> None:
    venue = auth.Principal(role=auth.Role.VENUE, subject="v", venue_id="cafe")
    seat = auth.Principal(role=auth.Role.SEAT, subject="s", venue_id="cafe", seat_id="s1")
    patron = auth.Principal(role=auth.Role.PATRON, subject="p", venue_id="cafe", seat_id="s1", session_id="A")
    provider = auth.Principal(role=auth.Role.PROVIDER, subject="p", provider_id="prov")
    mine = {"session_id": "A", "venue_id": "cafe", "seat_id": "s1"}
    neighbour = {"session_id": "B", "venue_id": "cafe", "seat_id": "s2"}
    elsewhere = {"session_id": "C", "venue_id": "other", "seat_id": "s1"}

    venue.require_venue("cafe")
    venue.require_seat("cafe", "s9")
    venue.require_session(neighbour)
    seat.require_seat("cafe", "s1")
    seat.require_session(mine, media=True)
    patron.require_session(mine, media=True)
    provider.require_provider("prov")
    refusals = [
        lambda: venue.require_venue("other"),
        lambda: venue.require_session(neighbour, media=True),  # media is the seat's: it sees it, may not touch
        lambda: seat.require_seat("cafe", "s2"),
        lambda: provider.require_provider("someone"),
        lambda: provider.require_venue("cafe"),
        lambda: venue.require_operator("game_id"),
        lambda: venue.require_host("h1"),
    ]
    for refuse in refusals:
        with pytest.raises(PermissionDenied):
            refuse()
    # What the caller may not even see is answered as unknown, word for word (no existence oracle).
    concealed = [
        (lambda: venue.require_session(elsewhere), "session_id: no session 'C'"),
        (lambda: seat.require_session(neighbour), "session_id: no session 'B'"),
        (lambda: patron.require_session(neighbour, media=True), "session_id: no session 'B'"),
        (lambda: provider.require_owner("other", "host_id", "host", "h1"), "host_id: no host 'h1'"),
        (lambda: venue.require_owner("prov", "site_id", "site", "s1"), "site_id: no site 's1'"),
    ]
    for conceal, message in concealed:
        with pytest.raises(Concealed) as hidden:
            conceal()
        assert hidden.value.message == message
    assert NotFound.of("host_id", "host", "h1").message == "host_id: no host 'h1'"  # what an unknown host gets
    provider.require_owner("prov", "host_id", "host", "h1")


def test_session_tokens_open_one_session_only() -> None:
    tokens = auth.SessionTokens(ISSUER, VERIFIER)
    row = {"session_id": "A", "venue_id": "cafe", "seat_id": "s1", "token": "random"}
    token = tokens.issue(row)
    tokens.check(row, token)
    with pytest.raises(PermissionDenied, match="session_token: does not match"):
        tokens.check({**row, "session_id": "B"}, token)
    with pytest.raises(PermissionDenied, match=r"resume\.session_token"):
        tokens.check(row, "garbage", "resume.session_token")
    stored = auth.SessionTokens(None, None)
    assert stored.issue(row) == "random"
    stored.check(row, "random")
    with pytest.raises(PermissionDenied):
        stored.check(row, token)


def test_rate_limiter_allows_a_burst_then_meters() -> None:
    limiter = RateLimiter(rate_per_s=10, burst=3)
    assert [limiter.take("v", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("v", 0.0) == pytest.approx(0.1)
    assert limiter.take("other", 0.0) == 0.0  # tenants apart
    assert limiter.take("v", 0.2) == 0.0


def test_guard_needs_a_bearer_token_and_meters_by_tenant() -> None:
    guard = Guard(VERIFIER, Limits(rate_per_s=1, burst=1, streams=1))
    method = "/cloudseat.v1.VenueService/GetVenue"
    with pytest.raises(Unauthenticated, match="needs a token"):
        guard.authenticate(method, (), {})
    with pytest.raises(Unauthenticated, match="Bearer"):
        guard.authenticate(method, (("authorization", "Basic abc"),), {})
    token = ISSUER.issue(auth.Role.VENUE, ttl_s=60, venue_id="cafe")
    who = guard.authenticate(method, (("authorization", f"Bearer {token}"),), {})
    guard.spend(who, now=100.0)
    with pytest.raises(ResourceExhausted, match="venue:cafe"):
        guard.spend(who, now=100.0)
    guard.open_stream(who)
    with pytest.raises(ResourceExhausted, match="quota"):
        guard.open_stream(who)
    guard.close_stream(who)
    guard.open_stream(who)
    with pytest.raises(Unauthenticated, match="client certificate"):
        guard.authenticate("/cloudseat.v1.AgentService/Connect", (), {})
    assert Guard(None).authenticate(method, (), {}) is auth.TRUSTED


def test_certificates_name_role_and_host(tmp_path: Path) -> None:
    ca, ca_key = tls.make_ca(tmp_path)
    agent = tls.issue(ca, ca_key, tmp_path, role="agent", name="host-7")
    broker = tls.issue(ca, ca_key, tmp_path, role="broker", name="broker")
    assert tls.identity(agent.cert.read_bytes()) == ("agent", "host-7")
    assert tls.identity(broker.cert.read_bytes()) == ("broker", "broker")
    with pytest.raises(ValueError):
        tls.issue(ca, ca_key, tmp_path, role="admin", name="x")
    # The guard reads the agent's identity from the TLS peer: only an agent certificate speaks for a host.
    guard = Guard(VERIFIER)
    connect = "/cloudseat.v1.AgentService/Connect"
    who = guard.authenticate(
        connect, (), {"x509_common_name": [b"host-7"], "x509_pem_cert": [agent.cert.read_bytes()]}
    )
    assert (who.role, who.host_id) == (auth.Role.AGENT, "host-7")
    who.require_host("host-7")
    with pytest.raises(PermissionDenied):
        who.require_host("host-8")
    with pytest.raises(PermissionDenied, match="not an agent"):
        guard.authenticate(
            connect, (), {"x509_common_name": [b"broker"], "x509_pem_cert": [broker.cert.read_bytes()]}
        )
