"""Why a seat cannot reach its broker, in words that say what to fix.

gRPC answers UNAVAILABLE for every way a connection can fail, with its own text ("errors resolving …", "Tls
handshake failed …", "Socket closed"). `cause_of` reads that text (pure), `sentence` says what to fix, naming the
flag (both seat clients take the same: --broker, --ca; CLOUDSEAT_BROKER, CLOUDSEAT_CA in the environment):

    a name that does not resolve        the name, and --broker
    nothing listening (refused)         the address, --broker, and whether the broker runs
    plaintext to a TLS broker           that it is TLS, and --ca FILE
    a certificate --ca does not trust   that it is TLS, the CA file given, and --ca FILE
    a certificate for another name      that it is TLS, the name, and --broker
    TLS to a plaintext broker           that it is TLS, and to leave out --ca

A connection closed without a word is what a plaintext seat sees of a TLS broker, and what a TLS seat may see of a
plaintext one, but also of anything else on that port; `speaks_tls` tells them apart by trying a TLS handshake with
the address (the certificate unchecked: the answer only says whether TLS is spoken there, it trusts nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from typing import Final, Protocol

PROBE_TIMEOUT_S: Final = 2.0


class Cause(enum.Enum):
    NAME = "the broker's host name does not resolve"
    REFUSED = "nothing listens at the broker's address"
    TIMED_OUT = "the broker's address does not answer"
    CLOSED = "the connection was closed without a word"
    TLS_WANTED = "the broker speaks TLS and the seat does not"
    TLS_UNTRUSTED = "the broker's certificate is not signed by the CA the seat trusts"
    TLS_NAME = "the broker's certificate is for another name"
    TLS_NOT_SPOKEN = "the seat speaks TLS and the broker does not"
    OTHER = "the broker cannot be reached"


# Causes no retry can mend: the seat's setup is wrong, so it is said at once rather than after a start's retries.
SETUP_MISTAKES: Final = frozenset(
    {Cause.NAME, Cause.TLS_WANTED, Cause.TLS_UNTRUSTED, Cause.TLS_NAME, Cause.TLS_NOT_SPOKEN}
)


class SeatAddress(Protocol):
    """What the sentences name: the seat's --broker and --ca (thin_client.seat.SeatConfig)."""

    @property
    def broker(self) -> str: ...

    @property
    def ca(self) -> object | None: ...


def cause_of(details: str, *, tls: bool, speaks_tls: bool | None = None) -> Cause:
    """The cause gRPC's UNAVAILABLE text points to; `tls`: the seat connects with TLS (--ca); `speaks_tls`: what
    `speaks_tls` found at the address (None: not probed, or nothing answered)."""
    text = details.lower()
    if any(
        word in text
        for word in ("errors resolving", "dns resolution failed", "domain name not found", "hostname lookup")
    ):
        return Cause.NAME
    if "connection refused" in text:
        return Cause.REFUSED
    if "timed out" in text or "timeout" in text:
        return Cause.TIMED_OUT
    if any(word in text for word in ("hostname verification", "peer name", "not in peer certificate")):
        return Cause.TLS_NAME
    if any(
        word in text
        for word in ("handshake failed", "ssl_error", "certificate_verify", "ssl routines", "verification check")
    ):
        if any(word in text for word in ("wrong_version_number", "wrong version", "packet_length", "http_request")):
            return Cause.TLS_NOT_SPOKEN
        return Cause.TLS_UNTRUSTED
    if any(word in text for word in ("socket closed", "connection reset", "broken pipe", "end of tcp stream")):
        if not tls and speaks_tls:
            return Cause.TLS_WANTED
        if tls and speaks_tls is False:
            return Cause.TLS_NOT_SPOKEN
        return Cause.CLOSED
    return Cause.OTHER


def needs_probe(details: str, *, tls: bool) -> bool:
    """Whether `speaks_tls` would tell more than the text does."""
    return cause_of(details, tls=tls) is Cause.CLOSED


def host_of(broker: str) -> str:
    """The host part of --broker's HOST:PORT (an IPv6 address without its brackets)."""
    host = broker.rsplit(":", 1)[0] if ":" in broker else broker
    return host.strip("[]")


def sentence(cause: Cause, cfg: SeatAddress) -> str:
    """One line for the seat's staff: what is wrong and which flag fixes it."""
    at = cfg.broker
    if cause is Cause.NAME:
        return (
            f"cannot resolve the broker's host name {host_of(at)!r} (--broker {at}): check the name, or give the "
            "broker's address as --broker HOST:PORT (CLOUDSEAT_BROKER)"
        )
    if cause is Cause.REFUSED:
        return (
            f"cannot reach the broker at {at}: nothing listens there (connection refused); check the broker "
            "address (--broker) and that the broker is running"
        )
    if cause is Cause.TIMED_OUT:
        return (
            f"cannot reach the broker at {at}: no answer (timed out); check the broker address (--broker) and the "
            "seat's network"
        )
    if cause is Cause.TLS_WANTED:
        return (
            f"TLS: the broker at {at} speaks TLS and this seat connects without it: give the CA bundle that signed "
            "the broker's certificate with --ca FILE (CLOUDSEAT_CA)"
        )
    if cause is Cause.TLS_UNTRUSTED:
        return (
            f"TLS: the broker's certificate at {at} is not signed by the CA in --ca {cfg.ca}: give the CA bundle "
            "that signed the broker's certificate with --ca FILE"
        )
    if cause is Cause.TLS_NAME:
        return (
            f"TLS: the broker's certificate at {at} is not for the name {host_of(at)!r}: reach the broker by a name "
            "its certificate carries (--broker), or have its certificate issued for that name"
        )
    if cause is Cause.TLS_NOT_SPOKEN:
        return (
            f"TLS: the broker at {at} does not speak TLS (a broker running --insecure?): leave out --ca (and "
            "CLOUDSEAT_CA), or point --broker at the broker's TLS address"
        )
    if cause is Cause.CLOSED:
        return (
            f"cannot reach the broker at {at}: the connection was closed without an answer; check the broker "
            "address (--broker), that the broker is running, and --ca"
        )
    return f"cannot reach the broker at {at}: check the broker address (--broker) and that the broker is running"


async def speaks_tls(broker: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool | None:
    """Whether the address completes a TLS handshake (its certificate unchecked); None when nothing answered in
    time or the address is not HOST:PORT (a unix socket)."""
    if broker.startswith("unix:") or ":" not in broker:
        return None
    host, port_text = broker.rsplit(":", 1)
    try:
        port = int(port_text)
    except ValueError:
        return None
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe: it asks whether TLS is spoken, and believes nothing it is told
    context.set_alpn_protocols(["h2"])
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host.strip("[]"), port, ssl=context)
    except ssl.SSLError:
        return False
    except ConnectionRefusedError:
        return None
    except (ConnectionError, EOFError, asyncio.IncompleteReadError):
        return False  # it accepted the connection and dropped the handshake: not TLS
    except (OSError, TimeoutError):
        return None
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    return True


async def diagnose(details: str, cfg: SeatAddress) -> Cause:
    """`cause_of`, probing the address when the text alone cannot tell."""
    tls = cfg.ca is not None
    probed = await speaks_tls(cfg.broker) if needs_probe(details, tls=tls) else None
    return cause_of(details, tls=tls, speaks_tls=probed)
