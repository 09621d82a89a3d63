"""ICE host candidates only on the addresses we name.

aioice gathers host candidates in `Connection.gather_candidates`, which calls the module-level function
`aioice.ice.get_host_addresses(use_ipv4, use_ipv6)`: every address of every interface (through ifaddr), except
127.0.0.1 and ::1. Neither aiortc's `RTCConfiguration` nor aioice's `Connection` takes a list of addresses, so we
replace that one function, once per process, with one that returns the addresses in a context variable when it is
set and defers to aioice's own function otherwise. `host_addresses(...)` sets the variable around the calls that
gather (`setLocalDescription`); asyncio tasks copy the context when created, so the gathering tasks aiortc starts
see it, and no other peer connection in the process is affected. This is how loopback-only tests get 127.0.0.1
candidates at all (aioice skips loopback by default), and how a host offers only its media addresses.

Server-reflexive and relay candidates still come from the STUN/TURN servers in the configuration.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Callable, Iterable, Iterator

import aioice.ice

_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "cloudseat_ice_host_addresses", default=None
)
_aioice_get_host_addresses: Callable[[bool, bool], list[str]] | None = None


def _scoped_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    addresses = _addresses.get()
    if addresses is None:
        assert _aioice_get_host_addresses is not None
        return _aioice_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in addresses if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]


def _install() -> None:
    global _aioice_get_host_addresses
    if aioice.ice.get_host_addresses is not _scoped_host_addresses:
        _aioice_get_host_addresses = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _scoped_host_addresses


def check_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """The addresses as a tuple; ValueError for one that is not an IP address."""
    out = tuple(addresses)
    for a in out:
        ipaddress.ip_address(a)
    return out


@contextlib.contextmanager
def host_addresses(addresses: Iterable[str]) -> Iterator[None]:
    """Within this block (and the tasks it starts), ICE gathers host candidates on ``addresses`` only."""
    _install()
    token = _addresses.set(check_addresses(addresses))
    try:
        yield
    finally:
        _addresses.reset(token)
