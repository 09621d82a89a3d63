"""Who is calling, and what they may touch: tenant tokens and the authorisation rules. Pure (no I/O but key files).

Tokens are JWTs signed with Ed25519 ("EdDSA"): the verifier accepts that algorithm and no other (no "none", no
HMAC with a public key as the secret), requires `exp`, `iat`, `sub`, `role`, checks the audience and the issuer,
and allows 30 s of clock skew. Several verification keys may be in force at once, so a signing key is rotated by
adding the new public key, switching the issuer, and removing the old key once its tokens have expired.

Roles, and what a token of each may touch (`Principal`):

==========  ==================================  ==============================================================
role        claims                              may
==========  ==================================  ==============================================================
operator    —                                   everything (catalogue, providers, venues; the region's staff)
provider    provider                            its sites, prices and hosts (list, drain, undrain)
venue       venue                               its venue, zones, seats, latency reports, sessions (start for
                                                any of its seats, watch, end); not negotiate: media is the seat's
seat        venue, seat                         start sessions for that seat, and watch, negotiate, end them
patron      venue, seat, session                that one session: watch, negotiate, end (StartSession returns
                                                it as session_token; a resume presents the lost one's)
==========  ==================================  ==============================================================

Agents do not use tokens: they prove their host with a client certificate (cloudseat.tls).
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import enum
import hmac
import uuid
from pathlib import Path
from typing import Any

import jwt
from cloudseat.errors import Concealed, PermissionDenied, Unauthenticated
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
AUDIENCE = "cloudseat"
ISSUER = "cloudseat"
LEEWAY_S = 30
# A patron token outlives any session: it is checked against the session as well.
PATRON_TTL_S = 24 * 3600


class Role(enum.StrEnum):
    OPERATOR = "operator"
    PROVIDER = "provider"
    VENUE = "venue"
    SEAT = "seat"
    PATRON = "patron"
    # Not a token role: an agent proves its host with its client certificate (cloudseat.tls).
    AGENT = "agent"


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """The verified caller. `TRUSTED` stands for every caller when the broker runs without authentication."""

    role: Role
    subject: str
    provider_id: str = ""
    venue_id: str = ""
    seat_id: str = ""
    session_id: str = ""
    host_id: str = ""
    trusted: bool = False
    # When its token expires (seconds since the epoch; a certificate's caller: never, the TLS layer checks it).
    expires_at: float = float("inf")

    @property
    def tenant(self) -> str:
        """The rate-limit and audit key: the provider or venue the caller acts for (operator: its subject)."""
        if self.role is Role.PROVIDER:
            return f"provider:{self.provider_id}"
        if self.role in (Role.VENUE, Role.SEAT, Role.PATRON):
            return f"venue:{self.venue_id}"
        if self.role is Role.AGENT:
            return f"host:{self.host_id}"
        return f"operator:{self.subject}"

    # -- the rules (each raises PermissionDenied naming the field that points outside the caller's tenancy) --------
    # An object looked up by its id that the caller may not see at all is answered as an unknown id (Concealed, a
    # NotFound with the very words of the unknown one): a refusal would tell that the id exists.

    def require_operator(self, what: str) -> None:
        if not (self.trusted or self.role is Role.OPERATOR):
            raise PermissionDenied(f"{what}: only the region's operator may do this (token role {self.role})")

    def require_provider(self, provider_id: str, field: str = "provider_id") -> None:
        if self.trusted or self.role is Role.OPERATOR:
            return
        if self.role is not Role.PROVIDER or self.provider_id != provider_id:
            raise PermissionDenied(f"{field}: not a provider this token may act for")

    def require_owner(self, provider_id: str, field: str, kind: str, ident: str) -> None:
        """Touch an object (`kind` `ident`, named by `field`) of provider `provider_id`: that provider or the
        operator; anyone else is told there is no such object."""
        if self.trusted or self.role is Role.OPERATOR:
            return
        if self.role is not Role.PROVIDER or self.provider_id != provider_id:
            raise Concealed.of(field, kind, ident)

    def require_venue(self, venue_id: str, field: str = "venue_id") -> None:
        if self.trusted or self.role is Role.OPERATOR:
            return
        if self.role is not Role.VENUE or self.venue_id != venue_id:
            raise PermissionDenied(f"{field}: not a venue this token may act for")

    def require_seat(self, venue_id: str, seat_id: str) -> None:
        """Start a session for this seat: its venue, or the seat itself."""
        if self.trusted or self.role is Role.OPERATOR:
            return
        if self.role is Role.VENUE and self.venue_id == venue_id:
            return
        if self.role is Role.SEAT and (self.venue_id, self.seat_id) == (venue_id, seat_id):
            return
        raise PermissionDenied("seat_id: not a seat this token may start sessions for")

    def require_session(self, session: Any, *, media: bool = False) -> None:
        """Touch `session` (a row or message with session_id, venue_id, seat_id). With media (Negotiate), only the
        seat that owns it or its patron may. A caller that may not even see it is told there is no such session."""
        if self.trusted or (self.role is Role.OPERATOR and not media):
            return
        sid, venue, seat = str(session["session_id"]), session["venue_id"], session["seat_id"]
        if self.role is Role.PATRON and self.session_id == sid:
            return
        if self.role is Role.SEAT and (self.venue_id, self.seat_id) == (venue, seat):
            return
        if self.role is Role.VENUE and self.venue_id == venue:
            if not media:
                return
            raise PermissionDenied("session_id: only the seat that owns the session may negotiate it")
        if self.role is Role.OPERATOR:
            raise PermissionDenied("session_id: only the seat that owns the session may negotiate it")
        raise Concealed.of("session_id", "session", sid)

    def audit_scope(self, tenant: str, field: str = "tenant") -> str | None:
        """Whose audit rows the caller may read, given the `tenant` it asked for ('' : its own): the operator any
        tenant's (None: every tenant's); a venue or a provider only its own; no one else any."""
        if self.trusted or self.role is Role.OPERATOR:
            return tenant or None
        if self.role not in (Role.VENUE, Role.PROVIDER):
            raise PermissionDenied(
                f"{field}: only the operator, a venue or a provider may read the audit trail"
            )
        if tenant and tenant != self.tenant:
            raise PermissionDenied(f"{field}: not a tenant this token may read the audit trail of")
        return self.tenant

    def require_host(self, host_id: str, field: str = "host_id") -> None:
        """Speak for host `host_id` on the agent link: only that host's own certificate may."""
        if self.trusted:
            return
        if self.role is not Role.AGENT or self.host_id != host_id:
            raise PermissionDenied(f"{field}: this certificate is not host {host_id!r}'s")


TRUSTED = Principal(role=Role.OPERATOR, subject="(authentication off)", trusted=True)

_CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("cloudseat_caller", default=TRUSTED)


def caller() -> Principal:
    """The principal of the RPC being served (the interceptor sets it; TRUSTED outside any RPC)."""
    return _CALLER.get()


def set_caller(principal: Principal) -> contextvars.Token[Principal]:
    return _CALLER.set(principal)


def reset_caller(token: contextvars.Token[Principal]) -> None:
    _CALLER.reset(token)


class SessionTokens:
    """The capability StartSession returns as session_token, and its check on Negotiate, EndSession and a resume.

    With token keys (authentication on) it is a signed patron token for that one session; without, the random
    capability the session row keeps. Either way a token of one session never opens another."""

    def __init__(self, issuer: TokenIssuer | None, verifier: TokenVerifier | None) -> None:
        self.issuer = issuer
        self.verifier = verifier

    def issue(self, session: Any) -> str:
        if self.issuer is None:
            return str(session["token"])
        return self.issuer.patron(str(session["session_id"]), session["venue_id"], session["seat_id"])

    def check(self, session: Any, token: str, field: str = "session_token") -> None:
        """PermissionDenied (naming `field`) unless `token` is this session's capability."""
        if self.verifier is None:
            if not hmac.compare_digest(str(session["token"]).encode(), token.encode()):
                raise PermissionDenied(f"{field}: does not match the session")
            return
        try:
            principal = self.verifier.verify(token)
        except Unauthenticated as exc:
            raise PermissionDenied(f"{field}: {exc.message.removeprefix('authorization: ')}") from None
        if principal.role is not Role.PATRON or principal.session_id != str(session["session_id"]):
            raise PermissionDenied(f"{field}: does not match the session")


# -- keys ------------------------------------------------------------------------------------------------------


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_signing_key(key: Ed25519PrivateKey, path: Path) -> None:
    """The private key (PKCS#8 PEM, mode 0600) and its public half beside it as NAME.pub."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(pem)
    public_path(path).write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def public_path(private: Path) -> Path:
    return private.with_name(private.name + ".pub")


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: the token signing key must be Ed25519")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: token verification keys must be Ed25519")
    return key


# -- tokens ----------------------------------------------------------------------------------------------------


class TokenIssuer:
    def __init__(self, key: Ed25519PrivateKey, *, issuer: str = ISSUER) -> None:
        self._key = key
        self._issuer = issuer

    def issue(
        self,
        role: Role,
        *,
        subject: str = "",
        ttl_s: float,
        provider_id: str = "",
        venue_id: str = "",
        seat_id: str = "",
        session_id: str = "",
        now: datetime.datetime | None = None,
    ) -> str:
        if role is Role.AGENT:
            raise ValueError("agents use certificates, not tokens")
        _check_claims(role, provider_id, venue_id, seat_id, session_id)
        if not ttl_s > 0:
            raise ValueError("a token needs a positive lifetime")
        issued = now or datetime.datetime.now(datetime.UTC)
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": AUDIENCE,
            "sub": subject or _default_subject(role, provider_id, venue_id, seat_id, session_id),
            "iat": issued,
            "nbf": issued,
            "exp": issued + datetime.timedelta(seconds=ttl_s),
            "jti": uuid.uuid4().hex,
            "role": role.value,
        }
        for name, value in (
            ("provider", provider_id),
            ("venue", venue_id),
            ("seat", seat_id),
            ("session", session_id),
        ):
            if value:
                claims[name] = value
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def patron(self, session_id: str, venue_id: str, seat_id: str) -> str:
        return self.issue(
            Role.PATRON, ttl_s=PATRON_TTL_S, venue_id=venue_id, seat_id=seat_id, session_id=session_id
        )


class TokenVerifier:
    def __init__(self, keys: list[Ed25519PublicKey], *, issuer: str = ISSUER) -> None:
        if not keys:
            raise ValueError("at least one verification key is needed")
        self._keys = list(keys)
        self._issuer = issuer

    def verify(self, token: str, *, now: datetime.datetime | None = None) -> Principal:
        """The principal a token proves; Unauthenticated (saying why, never echoing the token) otherwise."""
        last: Exception | None = None
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    audience=AUDIENCE,
                    issuer=self._issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iat", "sub", "aud", "iss"]},
                )
            except jwt.InvalidSignatureError as exc:
                last = exc
                continue  # another key in force may have signed it
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("authorization: the token has expired; ask for a new one") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated("authorization: the token is not for cloudseat (audience)") from None
            except jwt.InvalidAlgorithmError:
                raise Unauthenticated(f"authorization: tokens must be signed with {ALGORITHM}") from None
            except jwt.InvalidTokenError as exc:
                raise Unauthenticated(f"authorization: not a valid token ({exc})") from None
            return _principal(claims)
        raise Unauthenticated("authorization: the token's signature does not verify") from last


def _principal(claims: dict[str, Any]) -> Principal:
    try:
        role = Role(claims.get("role", ""))
    except ValueError:
        raise Unauthenticated("authorization: the token has no known role") from None
    if role is Role.AGENT:
        raise Unauthenticated("authorization: agents prove their host with a certificate, not a token")
    fields = {
        "provider_id": str(claims.get("provider", "")),
        "venue_id": str(claims.get("venue", "")),
        "seat_id": str(claims.get("seat", "")),
        "session_id": str(claims.get("session", "")),
    }
    try:
        _check_claims(role, **fields)
    except ValueError as exc:
        raise Unauthenticated(f"authorization: {exc}") from None
    return Principal(
        role=role,
        subject=str(claims["sub"]),
        provider_id=fields["provider_id"],
        venue_id=fields["venue_id"],
        seat_id=fields["seat_id"],
        session_id=fields["session_id"],
        expires_at=float(claims["exp"]),
    )


_NEEDS: dict[Role, tuple[str, ...]] = {
    Role.OPERATOR: (),
    Role.PROVIDER: ("provider_id",),
    Role.VENUE: ("venue_id",),
    Role.SEAT: ("venue_id", "seat_id"),
    Role.PATRON: ("venue_id", "seat_id", "session_id"),
    Role.AGENT: (),
}


def needed_claims(role: Role) -> tuple[str, ...]:
    """The claims a token of `role` must carry, which are also the only ones it may (provider_id, venue_id,
    seat_id, session_id)."""
    return _NEEDS[role]


def _check_claims(role: Role, provider_id: str, venue_id: str, seat_id: str, session_id: str) -> None:
    given = {"provider_id": provider_id, "venue_id": venue_id, "seat_id": seat_id, "session_id": session_id}
    for name in _NEEDS[role]:
        if not given[name]:
            raise ValueError(f"a {role} token needs {name}")
    for name, value in given.items():
        if value and name not in _NEEDS[role]:
            raise ValueError(f"a {role} token carries no {name}")


def _default_subject(role: Role, provider_id: str, venue_id: str, seat_id: str, session_id: str) -> str:
    if role is Role.PROVIDER:
        return f"provider:{provider_id}"
    if role is Role.VENUE:
        return f"venue:{venue_id}"
    if role is Role.SEAT:
        return f"seat:{venue_id}/{seat_id}"
    if role is Role.PATRON:
        return f"patron:{session_id}"
    return "operator"
