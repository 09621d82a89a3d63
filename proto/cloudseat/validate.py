"""Checks for request fields. Each returns the clean value or raises InvalidArgument naming the field.

Pure: these take plain values, so they are tested without gRPC, and every RPC runs them before touching the store.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
import zoneinfo
from typing import TypeVar

from cloudseat.errors import InvalidArgument

_LISTEN = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Control characters (C0, DEL, C1) have no place in names and notes, and PostgreSQL text refuses NUL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

MAX_SDP_BYTES = 64 * 1024


def ident(value: str, field: str, *, required: bool = True) -> str:
    """An id slug: 1-64 of [A-Za-z0-9._:-], starting with a letter or digit. Empty is allowed when not required."""
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return ""
    if not _ID.fullmatch(value):
        raise InvalidArgument(
            field,
            "must be 1-64 characters of letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
        )
    return value


def host_port(value: str, field: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets; port 0 lets the system choose) -> (host without brackets, port)."""
    match = _LISTEN.fullmatch(value.strip())
    if match is None:
        raise InvalidArgument(field, f"{value!r} is not HOST:PORT")
    port = int(match["port"])
    if port > 65535:
        raise InvalidArgument(field, f"port {port} is above 65535")
    return match["host"].strip("[]"), port


def image_ref(value: str, field: str) -> str:
    """A game image a host holds: GAME_ID@VERSION, or a bare GAME_ID (taken as the catalogue's current version)."""
    game, sep, version = value.partition("@")
    ident(game, field)
    if sep:
        if not _ID.fullmatch(version):
            raise InvalidArgument(field, "must be GAME_ID or GAME_ID@VERSION (both id slugs)")
    return value


_REGISTRY_REF = re.compile(r"[a-z0-9]+(?:[._/-][a-z0-9]+)*@sha256:([0-9a-f]{64})")


def registry_image(ref: str, digest: str, field: str) -> tuple[str, str]:
    """An image in the registry: (REPOSITORY@sha256:HEX, HEX) with the digest the reference names; both or neither.
    `field` names the reference's field; the digest's is the same with _digest for _ref."""
    digest_field = field.removesuffix("_ref") + "_digest"
    if not ref and not digest:
        return "", ""
    if len(ref) > 255 or not (m := _REGISTRY_REF.fullmatch(ref)):
        raise InvalidArgument(
            field, "must be REPOSITORY@sha256:HEX (lowercase repository path, 64 hex digits)"
        )
    if digest != m.group(1):
        raise InvalidArgument(digest_field, "must be the 64 hex digits the reference ends with")
    return ref, digest


def request_id(value: str, field: str = "request_id") -> str:
    if not value:
        raise InvalidArgument(field, "is required (choose one per request and reuse it on retries)")
    if not _REQUEST_ID.fullmatch(value):
        raise InvalidArgument(field, "must be 1-128 printable ASCII characters without spaces")
    return value


def text(value: str, field: str, *, max_len: int = 200, required: bool = False) -> str:
    """Free text: no control characters, at most max_len characters."""
    if not value.strip():
        if required:
            raise InvalidArgument(field, "is required")
        return ""
    if len(value) > max_len:
        raise InvalidArgument(field, f"must be at most {max_len} characters")
    if _CONTROL.search(value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def session_id(value: str, field: str = "session_id") -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, "must be a session id (a UUID)") from None


def int_range(value: int, field: str, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise InvalidArgument(field, f"must be between {lo} and {hi}")
    return value


def number(value: float, field: str, lo: float, hi: float) -> float:
    """A finite number in [lo, hi] (NaN and infinities refused)."""
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidArgument(field, f"must be a number between {lo:g} and {hi:g}")
    return value


def recent(
    at: dt.datetime, now: dt.datetime, field: str, *, max_age_s: float, max_ahead_s: float
) -> dt.datetime:
    """A time a caller observed something: at most max_age_s before `now`, at most max_ahead_s after (clock skew)."""
    if at < now - dt.timedelta(seconds=max_age_s):
        raise InvalidArgument(field, f"must be within the last {max_age_s:g} s")
    if at > now + dt.timedelta(seconds=max_ahead_s):
        raise InvalidArgument(
            field, f"is in the future (more than {max_ahead_s:g} s ahead of the broker's clock)"
        )
    return at


def token(value: str, field: str = "session_token") -> str:
    if not value:
        raise InvalidArgument(field, "is required (StartSession returns it)")
    # A random capability (32 characters) or a signed patron token (a JWT, well under 1 KiB).
    if len(value) > 2048 or not value.isascii() or not value.isprintable():
        raise InvalidArgument(field, "is malformed")
    return value


def sdp(kind: str, body: str, field: str, *, expect: str) -> tuple[str, str]:
    """A session description of the expected type, plausibly SDP, bounded in size."""
    if kind != expect:
        raise InvalidArgument(f"{field}.type", f"must be {expect!r}")
    if not body:
        raise InvalidArgument(f"{field}.sdp", "is required")
    if len(body.encode()) > MAX_SDP_BYTES:
        raise InvalidArgument(f"{field}.sdp", f"must be at most {MAX_SDP_BYTES} bytes")
    if not body.startswith("v=0"):
        raise InvalidArgument(f"{field}.sdp", "is not an SDP description (must start with 'v=0')")
    if "\x00" in body:
        raise InvalidArgument(f"{field}.sdp", "must not contain NUL characters")
    return kind, body


# Timestamps a caller may send: 1970-01-01 up to the end of 9999 (what a datetime holds).
_MAX_SECONDS = 253_402_300_799


def instant(seconds: int, nanos: int, field: str) -> dt.datetime:
    """A protobuf Timestamp's (seconds, nanos) as an aware UTC datetime (microseconds), 1970 to 9999."""
    if not 0 <= seconds <= _MAX_SECONDS or not 0 <= nanos < 1_000_000_000:
        raise InvalidArgument(field, "must be a time between 1970 and 9999")
    return dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=nanos // 1000)


_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,29}(/[A-Za-z0-9_+-]{1,30}){0,2}")


def time_zone(value: str, field: str = "time_zone") -> str:
    """An IANA time zone name (e.g. Asia/Shanghai); empty means UTC."""
    if not value:
        return "UTC"
    if not _ZONE.fullmatch(value):
        raise InvalidArgument(field, "must be an IANA time zone name such as 'Asia/Shanghai'")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(field, f"unknown time zone {value!r}") from None
    return value


_CURRENCY = re.compile(r"[A-Z]{3}")
DEFAULT_CURRENCY = "CNY"


def currency(value: str, field: str = "currency") -> str:
    """An ISO 4217 currency code (CNY, USD, EUR); empty means CNY. Only the form is checked: the broker never
    converts between currencies, it keeps each amount with its code."""
    if not value:
        return DEFAULT_CURRENCY
    if not _CURRENCY.fullmatch(value):
        raise InvalidArgument(field, f"{value!r} is not an ISO 4217 code such as 'CNY' or 'USD' (three capitals)")
    return value


# Instants or whole days (a datetime is a date too).
_Day = TypeVar("_Day", bound=dt.date)


def period(
    start: _Day,
    end: _Day,
    *,
    max_days: int = 366,
    fields: tuple[str, str] = ("start", "end"),
    too_long: str = "",
) -> tuple[_Day, _Day]:
    """A period [start, end): start before end, at most max_days long; errors name the end field. `fields` are the
    request's names for (start, end); `too_long` words the second refusal for a request that has always said it in
    its own words (empty: "must be at most N days after START")."""
    start_field, end_field = fields
    if end <= start:
        raise InvalidArgument(end_field, f"must be after {start_field}")
    if end - start > dt.timedelta(days=max_days):
        raise InvalidArgument(end_field, too_long or f"must be at most {max_days} days after {start_field}")
    return start, end
