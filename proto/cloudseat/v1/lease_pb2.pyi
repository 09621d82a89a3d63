import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_STATE_UNSPECIFIED: _ClassVar[LeaseState]
    LEASE_STATE_ACTIVE: _ClassVar[LeaseState]
    LEASE_STATE_EXPIRED: _ClassVar[LeaseState]
    LEASE_STATE_CANCELLED: _ClassVar[LeaseState]
LEASE_STATE_UNSPECIFIED: LeaseState
LEASE_STATE_ACTIVE: LeaseState
LEASE_STATE_EXPIRED: LeaseState
LEASE_STATE_CANCELLED: LeaseState

class DailyWindow(_message.Message):
    __slots__ = ("start_minute", "duration_minutes")
    START_MINUTE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MINUTES_FIELD_NUMBER: _ClassVar[int]
    start_minute: int
    duration_minutes: int
    def __init__(self, start_minute: _Optional[int] = ..., duration_minutes: _Optional[int] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "provider_id", "venue_id", "gpu_class", "slots", "site_id", "max_latency_ms", "starts_at", "ends_at", "daily", "time_zone", "price_micros_per_slot_hour", "state", "created_at", "cancelled_at", "note", "in_force")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    DAILY_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    provider_id: str
    venue_id: str
    gpu_class: str
    slots: int
    site_id: str
    max_latency_ms: int
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    daily: DailyWindow
    time_zone: str
    price_micros_per_slot_hour: int
    state: LeaseState
    created_at: _timestamp_pb2.Timestamp
    cancelled_at: _timestamp_pb2.Timestamp
    note: str
    in_force: bool
    def __init__(self, lease_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., venue_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., slots: _Optional[int] = ..., site_id: _Optional[str] = ..., max_latency_ms: _Optional[int] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., daily: _Optional[_Union[DailyWindow, _Mapping]] = ..., time_zone: _Optional[str] = ..., price_micros_per_slot_hour: _Optional[int] = ..., state: _Optional[_Union[LeaseState, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., note: _Optional[str] = ..., in_force: bool = ...) -> None: ...

class CreateLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "venue_id", "gpu_class", "slots", "site_id", "max_latency_ms", "provider_id", "starts_at", "ends_at", "daily", "time_zone", "price_micros_per_slot_hour", "note")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    DAILY_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    venue_id: str
    gpu_class: str
    slots: int
    site_id: str
    max_latency_ms: int
    provider_id: str
    starts_at: _timestamp_pb2.Timestamp
    ends_at: _timestamp_pb2.Timestamp
    daily: DailyWindow
    time_zone: str
    price_micros_per_slot_hour: int
    note: str
    def __init__(self, lease_id: _Optional[str] = ..., venue_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., slots: _Optional[int] = ..., site_id: _Optional[str] = ..., max_latency_ms: _Optional[int] = ..., provider_id: _Optional[str] = ..., starts_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ends_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., daily: _Optional[_Union[DailyWindow, _Mapping]] = ..., time_zone: _Optional[str] = ..., price_micros_per_slot_hour: _Optional[int] = ..., note: _Optional[str] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ("venue_id", "provider_id", "active_only")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    provider_id: str
    active_only: bool
    def __init__(self, venue_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., active_only: bool = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class CancelLeaseRequest(_message.Message):
    __slots__ = ("lease_id", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    reason: str
    def __init__(self, lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetLeaseUseRequest(_message.Message):
    __slots__ = ("lease_id", "venue_id", "start", "end", "time_zone")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    venue_id: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    time_zone: str
    def __init__(self, lease_id: _Optional[str] = ..., venue_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., time_zone: _Optional[str] = ...) -> None: ...

class HourUse(_message.Message):
    __slots__ = ("start", "end", "leased_slot_seconds", "used_slot_seconds")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LEASED_SLOT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USED_SLOT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    leased_slot_seconds: int
    used_slot_seconds: int
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., leased_slot_seconds: _Optional[int] = ..., used_slot_seconds: _Optional[int] = ...) -> None: ...

class LeaseUse(_message.Message):
    __slots__ = ("hours", "leased_slot_seconds", "used_slot_seconds")
    HOURS_FIELD_NUMBER: _ClassVar[int]
    LEASED_SLOT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USED_SLOT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    hours: _containers.RepeatedCompositeFieldContainer[HourUse]
    leased_slot_seconds: int
    used_slot_seconds: int
    def __init__(self, hours: _Optional[_Iterable[_Union[HourUse, _Mapping]]] = ..., leased_slot_seconds: _Optional[int] = ..., used_slot_seconds: _Optional[int] = ...) -> None: ...
