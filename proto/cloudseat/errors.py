"""The contract's errors: one root, each class's docstring is its default message, each class one gRPC status.

    CloudseatError
    ├── InvalidArgument        a request field is missing or malformed (names the field)
    ├── NotFound               an id that does not exist
    │   └── Concealed          another tenant's id, answered exactly as one that does not exist
    ├── AlreadyExists          a create for an id that is taken
    ├── FailedPrecondition     the request conflicts with the current state
    │   ├── IllegalTransition  a lifecycle move the state machine forbids
    │   └── StaleEpoch         an agent presented an epoch older than its host's current one
    ├── Unauthenticated        no credentials, or credentials that do not verify (token, certificate)
    ├── PermissionDenied       the caller may not do this (another tenant's venue, seat, host or session)
    ├── ResourceExhausted      the caller's rate limit or quota is used up; retry later
    ├── Unavailable            a dependency (database, agent) cannot be reached now; retry
    ├── DeadlineExceeded       a relay (negotiation with an agent) did not answer in time
    └── StoreError             the database refused something the broker did not expect (a bug, not a client error)

The broker raises them and `broker.rpc.status` maps each class to its status code (nothing else in the broker
chooses status codes); the shared validation (cloudseat.validate) and the seat's kiosk raise InvalidArgument too.
"""

from __future__ import annotations


class CloudseatError(Exception):
    """cloudseat broker error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidArgument(CloudseatError):
    """A request field is missing or malformed."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}")


class NotFound(CloudseatError):
    """Not found."""

    @classmethod
    def of(cls, field: str, kind: str, ident: str) -> NotFound:
        return cls(f"{field}: no {kind} {ident!r}")


class Concealed(NotFound):
    """Not found.

    Another tenant's object, answered word for word as an unknown one (no existence oracle); the broker tells the
    two apart only to count cross-tenant attempts (broker.threats)."""


class AlreadyExists(CloudseatError):
    """Already exists."""


class FailedPrecondition(CloudseatError):
    """The request conflicts with the current state."""


class IllegalTransition(FailedPrecondition):
    """The session cannot make that move from its current state."""


class StaleEpoch(FailedPrecondition):
    """The agent's epoch is older than its host's current one."""


class Unauthenticated(CloudseatError):
    """The call carries no valid credentials."""


class PermissionDenied(CloudseatError):
    """Permission denied."""


class ResourceExhausted(CloudseatError):
    """A rate limit or quota is exhausted; retry later."""

    def __init__(self, message: str | None = None, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        # When to try again, if the refusal knows: sent as the trailer `grpc-retry-pushback-ms`.
        self.retry_after_ms = retry_after_ms


class Unavailable(CloudseatError):
    """A dependency is unavailable; retry."""


class DeadlineExceeded(CloudseatError):
    """The relayed call did not answer in time."""


class StoreError(CloudseatError):
    """The database refused an operation unexpectedly."""
