import datetime

from cloudseat.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Venue(_message.Message):
    __slots__ = ("venue_id", "name", "zones", "latencies", "created_at", "time_zone")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    LATENCIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    name: str
    zones: _containers.RepeatedCompositeFieldContainer[Zone]
    latencies: _containers.RepeatedCompositeFieldContainer[SiteLatency]
    created_at: _timestamp_pb2.Timestamp
    time_zone: str
    def __init__(self, venue_id: _Optional[str] = ..., name: _Optional[str] = ..., zones: _Optional[_Iterable[_Union[Zone, _Mapping]]] = ..., latencies: _Optional[_Iterable[_Union[SiteLatency, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_zone: _Optional[str] = ...) -> None: ...

class Zone(_message.Message):
    __slots__ = ("venue_id", "zone_id", "tier", "latency_cap_ms", "tier_spec", "playout")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_CAP_MS_FIELD_NUMBER: _ClassVar[int]
    TIER_SPEC_FIELD_NUMBER: _ClassVar[int]
    PLAYOUT_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    zone_id: str
    tier: _common_pb2.Tier
    latency_cap_ms: int
    tier_spec: _common_pb2.TierSpec
    playout: _common_pb2.PlayoutMode
    def __init__(self, venue_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., tier: _Optional[_Union[_common_pb2.Tier, str]] = ..., latency_cap_ms: _Optional[int] = ..., tier_spec: _Optional[_Union[_common_pb2.TierSpec, _Mapping]] = ..., playout: _Optional[_Union[_common_pb2.PlayoutMode, str]] = ...) -> None: ...

class Seat(_message.Message):
    __slots__ = ("venue_id", "seat_id", "zone_id")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    seat_id: str
    zone_id: str
    def __init__(self, venue_id: _Optional[str] = ..., seat_id: _Optional[str] = ..., zone_id: _Optional[str] = ...) -> None: ...

class SiteLatency(_message.Message):
    __slots__ = ("site_id", "rtt_ms", "measured_at")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    MEASURED_AT_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    rtt_ms: int
    measured_at: _timestamp_pb2.Timestamp
    def __init__(self, site_id: _Optional[str] = ..., rtt_ms: _Optional[int] = ..., measured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateVenueRequest(_message.Message):
    __slots__ = ("venue_id", "name", "time_zone")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    name: str
    time_zone: str
    def __init__(self, venue_id: _Optional[str] = ..., name: _Optional[str] = ..., time_zone: _Optional[str] = ...) -> None: ...

class GetVenueRequest(_message.Message):
    __slots__ = ("venue_id",)
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    def __init__(self, venue_id: _Optional[str] = ...) -> None: ...

class PutZoneRequest(_message.Message):
    __slots__ = ("venue_id", "zone_id", "tier", "latency_cap_ms", "playout")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_CAP_MS_FIELD_NUMBER: _ClassVar[int]
    PLAYOUT_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    zone_id: str
    tier: _common_pb2.Tier
    latency_cap_ms: int
    playout: _common_pb2.PlayoutMode
    def __init__(self, venue_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., tier: _Optional[_Union[_common_pb2.Tier, str]] = ..., latency_cap_ms: _Optional[int] = ..., playout: _Optional[_Union[_common_pb2.PlayoutMode, str]] = ...) -> None: ...

class PutSeatRequest(_message.Message):
    __slots__ = ("venue_id", "seat_id", "zone_id")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    seat_id: str
    zone_id: str
    def __init__(self, venue_id: _Optional[str] = ..., seat_id: _Optional[str] = ..., zone_id: _Optional[str] = ...) -> None: ...

class LatencySample(_message.Message):
    __slots__ = ("site_id", "rtt_ms")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    rtt_ms: int
    def __init__(self, site_id: _Optional[str] = ..., rtt_ms: _Optional[int] = ...) -> None: ...

class ReportLatencyRequest(_message.Message):
    __slots__ = ("venue_id", "samples")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    samples: _containers.RepeatedCompositeFieldContainer[LatencySample]
    def __init__(self, venue_id: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[LatencySample, _Mapping]]] = ...) -> None: ...

class ReportLatencyResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class ListSeatsRequest(_message.Message):
    __slots__ = ("venue_id",)
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    def __init__(self, venue_id: _Optional[str] = ...) -> None: ...

class SeatStatus(_message.Message):
    __slots__ = ("seat", "session")
    SEAT_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    seat: Seat
    session: _common_pb2.Session
    def __init__(self, seat: _Optional[_Union[Seat, _Mapping]] = ..., session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class ListSeatsResponse(_message.Message):
    __slots__ = ("seats",)
    SEATS_FIELD_NUMBER: _ClassVar[int]
    seats: _containers.RepeatedCompositeFieldContainer[SeatStatus]
    def __init__(self, seats: _Optional[_Iterable[_Union[SeatStatus, _Mapping]]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("venue_id", "live_only", "limit")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    LIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    live_only: bool
    limit: int
    def __init__(self, venue_id: _Optional[str] = ..., live_only: bool = ..., limit: _Optional[int] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_common_pb2.Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[_common_pb2.Session, _Mapping]]] = ...) -> None: ...

class AddTimeRequest(_message.Message):
    __slots__ = ("venue_id", "session_id", "seconds")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    session_id: str
    seconds: int
    def __init__(self, venue_id: _Optional[str] = ..., session_id: _Optional[str] = ..., seconds: _Optional[int] = ...) -> None: ...

class AddTimeResponse(_message.Message):
    __slots__ = ("session", "time_left_s")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    TIME_LEFT_S_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    time_left_s: int
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ..., time_left_s: _Optional[int] = ...) -> None: ...
