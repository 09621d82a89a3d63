import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTRY_KIND_UNSPECIFIED: _ClassVar[EntryKind]
    ENTRY_KIND_USAGE: _ClassVar[EntryKind]
    ENTRY_KIND_SLA_CREDIT: _ClassVar[EntryKind]

class Basis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BASIS_UNSPECIFIED: _ClassVar[Basis]
    BASIS_ON_DEMAND: _ClassVar[Basis]
    BASIS_LEASE: _ClassVar[Basis]
ENTRY_KIND_UNSPECIFIED: EntryKind
ENTRY_KIND_USAGE: EntryKind
ENTRY_KIND_SLA_CREDIT: EntryKind
BASIS_UNSPECIFIED: Basis
BASIS_ON_DEMAND: Basis
BASIS_LEASE: Basis

class GetStatementRequest(_message.Message):
    __slots__ = ("venue_id", "provider_id", "start", "end")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    provider_id: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, venue_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StatementLine(_message.Message):
    __slots__ = ("site_id", "gpu_class", "basis", "price_micros_per_slot_hour", "entries", "seconds", "slot_seconds", "usage_micros", "credited_seconds", "credit_micros", "total_micros", "currency")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    SLOT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    USAGE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CREDITED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MICROS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    gpu_class: str
    basis: Basis
    price_micros_per_slot_hour: int
    entries: int
    seconds: int
    slot_seconds: int
    usage_micros: int
    credited_seconds: int
    credit_micros: int
    total_micros: int
    currency: str
    def __init__(self, site_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., basis: _Optional[_Union[Basis, str]] = ..., price_micros_per_slot_hour: _Optional[int] = ..., entries: _Optional[int] = ..., seconds: _Optional[int] = ..., slot_seconds: _Optional[int] = ..., usage_micros: _Optional[int] = ..., credited_seconds: _Optional[int] = ..., credit_micros: _Optional[int] = ..., total_micros: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class CurrencyTotal(_message.Message):
    __slots__ = ("currency", "usage_micros", "credit_micros", "total_micros")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    USAGE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MICROS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    usage_micros: int
    credit_micros: int
    total_micros: int
    def __init__(self, currency: _Optional[str] = ..., usage_micros: _Optional[int] = ..., credit_micros: _Optional[int] = ..., total_micros: _Optional[int] = ...) -> None: ...

class Statement(_message.Message):
    __slots__ = ("venue_id", "provider_id", "start", "end", "lines", "usage_micros", "credit_micros", "total_micros", "seconds", "credited_seconds", "entries", "totals", "currency")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    USAGE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_MICROS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MICROS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREDITED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    provider_id: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    lines: _containers.RepeatedCompositeFieldContainer[StatementLine]
    usage_micros: int
    credit_micros: int
    total_micros: int
    seconds: int
    credited_seconds: int
    entries: int
    totals: _containers.RepeatedCompositeFieldContainer[CurrencyTotal]
    currency: str
    def __init__(self, venue_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[StatementLine, _Mapping]]] = ..., usage_micros: _Optional[int] = ..., credit_micros: _Optional[int] = ..., total_micros: _Optional[int] = ..., seconds: _Optional[int] = ..., credited_seconds: _Optional[int] = ..., entries: _Optional[int] = ..., totals: _Optional[_Iterable[_Union[CurrencyTotal, _Mapping]]] = ..., currency: _Optional[str] = ...) -> None: ...

class ListLedgerRequest(_message.Message):
    __slots__ = ("venue_id", "provider_id", "start", "end", "page_size", "page_token")
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    venue_id: str
    provider_id: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, venue_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("entry_id", "session_id", "venue_id", "provider_id", "host_id", "site_id", "gpu_class", "slots", "kind", "basis", "lease_id", "price_micros_per_slot_hour", "start", "end", "seconds", "amount_micros", "written_at", "currency")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_AT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    entry_id: int
    session_id: str
    venue_id: str
    provider_id: str
    host_id: str
    site_id: str
    gpu_class: str
    slots: int
    kind: EntryKind
    basis: Basis
    lease_id: str
    price_micros_per_slot_hour: int
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    seconds: int
    amount_micros: int
    written_at: _timestamp_pb2.Timestamp
    currency: str
    def __init__(self, entry_id: _Optional[int] = ..., session_id: _Optional[str] = ..., venue_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., host_id: _Optional[str] = ..., site_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., slots: _Optional[int] = ..., kind: _Optional[_Union[EntryKind, str]] = ..., basis: _Optional[_Union[Basis, str]] = ..., lease_id: _Optional[str] = ..., price_micros_per_slot_hour: _Optional[int] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., seconds: _Optional[int] = ..., amount_micros: _Optional[int] = ..., written_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., currency: _Optional[str] = ...) -> None: ...

class ListLedgerResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
