"""Calls that need a host's agent, forwarded to the broker replica that holds the agent's link.

Behind a load balancer a seat's Negotiate reaches any replica, (n-1)/n of the time not the one the host's agent is
linked to. That replica is recorded on the host (hosts.broker_address, see broker.agents); the call goes there over
gRPC as it came, carrying the caller's own bearer token (valid at every replica of the region) over TLS that trusts
the region's CA, or in plaintext with authentication off. The target checks the caller, the session and its token
again, as for any call. (The offer, up to 64 KiB, is too big for a NOTIFY; hence a call and not the hub.)

Replicas share one certificate (one Secret), which names the region's Service, not each pod's address; so a replica
is reached at its advertised address but its certificate is checked against the first DNS name of this replica's
own certificate: the peer must hold a broker certificate for the same name, signed by the region's CA.

A forwarded call carries FORWARDED_BY and is never forwarded again, so two replicas that disagree about where a link
is (while its record is rewritten) cannot bounce a call between them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from cloudseat import errors, tls
from cloudseat.v1 import session_pb2, session_pb2_grpc
from cryptography import x509
from grpc import aio

from broker.rpc import status

# Metadata on a forwarded call: the address of the replica that forwarded it.
FORWARDED_BY = "x-cloudseat-forwarded-by"
# What of the caller's metadata travels with a forwarded call: who the caller is, nothing else.
_CARRIED = ("authorization",)
_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]
# The status codes a target may answer with, back to the broker's errors (the first class of each code).
_ERRORS: dict[grpc.StatusCode, type[errors.CloudseatError]] = {}
for _cls, _code in status.STATUS.items():
    _ERRORS.setdefault(_code, _cls)


def forwarded(metadata: Sequence[tuple[str, Any]] | None) -> bool:
    """Whether a call came forwarded from another replica (and so must be served here or not at all)."""
    return any(k == FORWARDED_BY for k, _ in metadata or ())


def _error(exc: aio.AioRpcError, address: str) -> errors.CloudseatError:
    """The target's answer as the broker's own error, so this replica answers the caller with the same status."""
    code, details = exc.code(), exc.details() or ""
    if code is grpc.StatusCode.UNAVAILABLE:
        return errors.Unavailable(
            f"session_id: the broker replica holding the agent's link ({address}) is unavailable ({details}); "
            "retry shortly"
        )
    cls = _ERRORS.get(code)
    if cls is None:
        return errors.Unavailable(f"session_id: the forwarded call ended {code.name}: {details}")
    if cls is errors.InvalidArgument:
        field, _, problem = details.partition(": ")  # InvalidArgument's message is "field: problem"
        return errors.InvalidArgument(field, problem) if problem else errors.InvalidArgument("request", field)
    return cls(details or None)


def _dns_name(cert: Path) -> str | None:
    """The first DNS name a certificate carries (None: only IP addresses, or none)."""
    try:
        names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (x509.ExtensionNotFound, ValueError, OSError):
        return None  # then the certificate is checked against the address's host
    dns = names.value.get_values_for_type(x509.DNSName)
    return dns[0] if dns else None


class Forwarder:
    """Channels to the other replicas of the region, opened on first use and kept.

    `tls_files`: this replica's certificate files (None: plaintext, authentication off); the CA bundle among them
    is what the other replicas' certificates chain to. `address` is this replica's own advertised address, set once
    it serves; a call is never forwarded to it."""

    def __init__(self, tls_files: tls.CertFiles | None) -> None:
        self._ca = None if tls_files is None else tls_files.ca
        self._options = list(_OPTIONS)
        name = None if tls_files is None else _dns_name(tls_files.cert)
        if name is not None:
            self._options.append(("grpc.ssl_target_name_override", name))
        self.address: str | None = None
        self._channels: dict[str, aio.Channel] = {}

    def _stub(self, address: str) -> session_pb2_grpc.SessionServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            if self._ca is None:
                channel = aio.insecure_channel(address, options=self._options)
            else:
                channel = aio.secure_channel(address, tls.client_credentials(self._ca), options=self._options)
            self._channels[address] = channel
        return session_pb2_grpc.SessionServiceStub(channel)

    async def negotiate(
        self,
        address: str,
        request: session_pb2.NegotiateRequest,
        metadata: Sequence[tuple[str, Any]] | None,
        timeout_s: float,
    ) -> session_pb2.NegotiateResponse:
        """Send the caller's Negotiate, as it came, to the replica at `address`; its answer or its error."""
        carried = [(k, v) for k, v in metadata or () if k in _CARRIED]
        carried.append((FORWARDED_BY, self.address or ""))
        try:
            answer: session_pb2.NegotiateResponse = await self._stub(address).Negotiate(
                request, metadata=carried, timeout=timeout_s
            )
        except aio.AioRpcError as exc:
            raise _error(exc, address) from None
        return answer

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close()
