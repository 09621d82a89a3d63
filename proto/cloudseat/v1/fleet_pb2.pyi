import datetime

from cloudseat.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HostStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOST_STATUS_UNSPECIFIED: _ClassVar[HostStatus]
    HOST_STATUS_ONLINE: _ClassVar[HostStatus]
    HOST_STATUS_LOST: _ClassVar[HostStatus]
    HOST_STATUS_OFFLINE: _ClassVar[HostStatus]
HOST_STATUS_UNSPECIFIED: HostStatus
HOST_STATUS_ONLINE: HostStatus
HOST_STATUS_LOST: HostStatus
HOST_STATUS_OFFLINE: HostStatus

class EnrolHostsRequest(_message.Message):
    __slots__ = ("site_id", "gpu_class", "host_ids", "host_prefix")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    HOST_IDS_FIELD_NUMBER: _ClassVar[int]
    HOST_PREFIX_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    gpu_class: str
    host_ids: _containers.RepeatedScalarFieldContainer[str]
    host_prefix: str
    def __init__(self, site_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., host_ids: _Optional[_Iterable[str]] = ..., host_prefix: _Optional[str] = ...) -> None: ...

class EnrolHostsResponse(_message.Message):
    __slots__ = ("site_id", "provider_id", "gpu_class", "host_ids", "host_prefix")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    HOST_IDS_FIELD_NUMBER: _ClassVar[int]
    HOST_PREFIX_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    provider_id: str
    gpu_class: str
    host_ids: _containers.RepeatedScalarFieldContainer[str]
    host_prefix: str
    def __init__(self, site_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., host_ids: _Optional[_Iterable[str]] = ..., host_prefix: _Optional[str] = ...) -> None: ...

class Provider(_message.Message):
    __slots__ = ("provider_id", "name", "created_at")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    name: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, provider_id: _Optional[str] = ..., name: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Site(_message.Message):
    __slots__ = ("site_id", "provider_id", "name", "region", "created_at")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    provider_id: str
    name: str
    region: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, site_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., name: _Optional[str] = ..., region: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Game(_message.Message):
    __slots__ = ("game_id", "name", "image_size_bytes", "version", "image_ref", "image_digest", "update_bytes", "lacking_from")
    class LackingFromEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    UPDATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LACKING_FROM_FIELD_NUMBER: _ClassVar[int]
    game_id: str
    name: str
    image_size_bytes: int
    version: str
    image_ref: str
    image_digest: str
    update_bytes: int
    lacking_from: _containers.ScalarMap[str, int]
    def __init__(self, game_id: _Optional[str] = ..., name: _Optional[str] = ..., image_size_bytes: _Optional[int] = ..., version: _Optional[str] = ..., image_ref: _Optional[str] = ..., image_digest: _Optional[str] = ..., update_bytes: _Optional[int] = ..., lacking_from: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Price(_message.Message):
    __slots__ = ("site_id", "gpu_class", "price_micros_per_slot_hour", "bands", "utc_offset_minutes", "price_now_micros_per_slot_hour", "currency")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    UTC_OFFSET_MINUTES_FIELD_NUMBER: _ClassVar[int]
    PRICE_NOW_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    gpu_class: str
    price_micros_per_slot_hour: int
    bands: _containers.RepeatedCompositeFieldContainer[PriceBand]
    utc_offset_minutes: int
    price_now_micros_per_slot_hour: int
    currency: str
    def __init__(self, site_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., price_micros_per_slot_hour: _Optional[int] = ..., bands: _Optional[_Iterable[_Union[PriceBand, _Mapping]]] = ..., utc_offset_minutes: _Optional[int] = ..., price_now_micros_per_slot_hour: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class PriceBand(_message.Message):
    __slots__ = ("start_minute", "end_minute", "price_micros_per_slot_hour")
    START_MINUTE_FIELD_NUMBER: _ClassVar[int]
    END_MINUTE_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    start_minute: int
    end_minute: int
    price_micros_per_slot_hour: int
    def __init__(self, start_minute: _Optional[int] = ..., end_minute: _Optional[int] = ..., price_micros_per_slot_hour: _Optional[int] = ...) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("model", "memory_bytes", "encoder_engines", "uuid")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENCODER_ENGINES_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    model: str
    memory_bytes: int
    encoder_engines: int
    uuid: str
    def __init__(self, model: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., encoder_engines: _Optional[int] = ..., uuid: _Optional[str] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("host_id", "provider_id", "site_id", "gpu_class", "status", "drained", "slots", "free_slots", "price_micros_per_slot_hour", "games_cached", "gpus", "epoch", "last_heartbeat_at", "live_sessions", "agent_version", "draining", "images_cached", "image_fetches", "drain_deadline")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    GAMES_CACHED_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    LIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    IMAGES_CACHED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FETCHES_FIELD_NUMBER: _ClassVar[int]
    DRAIN_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    provider_id: str
    site_id: str
    gpu_class: str
    status: HostStatus
    drained: bool
    slots: int
    free_slots: int
    price_micros_per_slot_hour: int
    games_cached: _containers.RepeatedScalarFieldContainer[str]
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    epoch: int
    last_heartbeat_at: _timestamp_pb2.Timestamp
    live_sessions: int
    agent_version: str
    draining: bool
    images_cached: _containers.RepeatedScalarFieldContainer[str]
    image_fetches: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageFetch]
    drain_deadline: _timestamp_pb2.Timestamp
    def __init__(self, host_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., site_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., status: _Optional[_Union[HostStatus, str]] = ..., drained: bool = ..., slots: _Optional[int] = ..., free_slots: _Optional[int] = ..., price_micros_per_slot_hour: _Optional[int] = ..., games_cached: _Optional[_Iterable[str]] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., epoch: _Optional[int] = ..., last_heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., live_sessions: _Optional[int] = ..., agent_version: _Optional[str] = ..., draining: bool = ..., images_cached: _Optional[_Iterable[str]] = ..., image_fetches: _Optional[_Iterable[_Union[_common_pb2.ImageFetch, _Mapping]]] = ..., drain_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateProviderRequest(_message.Message):
    __slots__ = ("provider_id", "name")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    name: str
    def __init__(self, provider_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateSiteRequest(_message.Message):
    __slots__ = ("site_id", "provider_id", "name", "region")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    provider_id: str
    name: str
    region: str
    def __init__(self, site_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., name: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class PutGameRequest(_message.Message):
    __slots__ = ("game_id", "name", "image_size_bytes", "version", "image_ref", "image_digest", "update_bytes", "lacking_from")
    class LackingFromEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    UPDATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LACKING_FROM_FIELD_NUMBER: _ClassVar[int]
    game_id: str
    name: str
    image_size_bytes: int
    version: str
    image_ref: str
    image_digest: str
    update_bytes: int
    lacking_from: _containers.ScalarMap[str, int]
    def __init__(self, game_id: _Optional[str] = ..., name: _Optional[str] = ..., image_size_bytes: _Optional[int] = ..., version: _Optional[str] = ..., image_ref: _Optional[str] = ..., image_digest: _Optional[str] = ..., update_bytes: _Optional[int] = ..., lacking_from: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PrewarmGameRequest(_message.Message):
    __slots__ = ("site_id", "game_id")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    game_id: str
    def __init__(self, site_id: _Optional[str] = ..., game_id: _Optional[str] = ...) -> None: ...

class PrewarmGameResponse(_message.Message):
    __slots__ = ("version", "host_ids")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_IDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    host_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., host_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SetPriceRequest(_message.Message):
    __slots__ = ("site_id", "gpu_class", "price_micros_per_slot_hour", "bands", "utc_offset_minutes", "currency")
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    UTC_OFFSET_MINUTES_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    site_id: str
    gpu_class: str
    price_micros_per_slot_hour: int
    bands: _containers.RepeatedCompositeFieldContainer[PriceBand]
    utc_offset_minutes: int
    currency: str
    def __init__(self, site_id: _Optional[str] = ..., gpu_class: _Optional[str] = ..., price_micros_per_slot_hour: _Optional[int] = ..., bands: _Optional[_Iterable[_Union[PriceBand, _Mapping]]] = ..., utc_offset_minutes: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class GetHostRequest(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ("provider_id", "site_id")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    site_id: str
    def __init__(self, provider_id: _Optional[str] = ..., site_id: _Optional[str] = ...) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts",)
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ...) -> None: ...

class DrainHostRequest(_message.Message):
    __slots__ = ("host_id", "reason", "deadline_s")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    reason: str
    deadline_s: int
    def __init__(self, host_id: _Optional[str] = ..., reason: _Optional[str] = ..., deadline_s: _Optional[int] = ...) -> None: ...

class UndrainHostRequest(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...
