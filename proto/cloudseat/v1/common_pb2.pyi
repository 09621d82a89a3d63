import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SessionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_STATE_UNSPECIFIED: _ClassVar[SessionState]
    SESSION_STATE_PENDING: _ClassVar[SessionState]
    SESSION_STATE_PLACED: _ClassVar[SessionState]
    SESSION_STATE_STARTING: _ClassVar[SessionState]
    SESSION_STATE_READY: _ClassVar[SessionState]
    SESSION_STATE_STREAMING: _ClassVar[SessionState]
    SESSION_STATE_ENDED: _ClassVar[SessionState]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_ENDED_BY_PATRON: _ClassVar[EndReason]
    END_REASON_ENDED_BY_VENUE: _ClassVar[EndReason]
    END_REASON_PENDING_TIMEOUT: _ClassVar[EndReason]
    END_REASON_START_TIMEOUT: _ClassVar[EndReason]
    END_REASON_HOST_LOST: _ClassVar[EndReason]
    END_REASON_FAILED: _ClassVar[EndReason]
    END_REASON_UNKNOWN_GAME: _ClassVar[EndReason]
    END_REASON_TIME_UP: _ClassVar[EndReason]
    END_REASON_HOST_DRAINED: _ClassVar[EndReason]
    END_REASON_REFUSED_BY_HOST: _ClassVar[EndReason]

class PendingReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PENDING_REASON_UNSPECIFIED: _ClassVar[PendingReason]
    PENDING_REASON_QUEUED: _ClassVar[PendingReason]
    PENDING_REASON_NO_SITE_WITHIN_CAP: _ClassVar[PendingReason]
    PENDING_REASON_NO_CAPACITY_WITHIN_CAP: _ClassVar[PendingReason]
    PENDING_REASON_CANDIDATES_DRAINED: _ClassVar[PendingReason]
    PENDING_REASON_WAITING_FOR_LOOSER_CAP: _ClassVar[PendingReason]

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_720P30: _ClassVar[Tier]
    TIER_720P60: _ClassVar[Tier]
    TIER_1080P60: _ClassVar[Tier]
    TIER_1080P120: _ClassVar[Tier]

class PlayoutMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAYOUT_MODE_UNSPECIFIED: _ClassVar[PlayoutMode]
    PLAYOUT_MODE_AUTO: _ClassVar[PlayoutMode]
    PLAYOUT_MODE_LOW_LATENCY: _ClassVar[PlayoutMode]
    PLAYOUT_MODE_SMOOTH: _ClassVar[PlayoutMode]
SESSION_STATE_UNSPECIFIED: SessionState
SESSION_STATE_PENDING: SessionState
SESSION_STATE_PLACED: SessionState
SESSION_STATE_STARTING: SessionState
SESSION_STATE_READY: SessionState
SESSION_STATE_STREAMING: SessionState
SESSION_STATE_ENDED: SessionState
END_REASON_UNSPECIFIED: EndReason
END_REASON_ENDED_BY_PATRON: EndReason
END_REASON_ENDED_BY_VENUE: EndReason
END_REASON_PENDING_TIMEOUT: EndReason
END_REASON_START_TIMEOUT: EndReason
END_REASON_HOST_LOST: EndReason
END_REASON_FAILED: EndReason
END_REASON_UNKNOWN_GAME: EndReason
END_REASON_TIME_UP: EndReason
END_REASON_HOST_DRAINED: EndReason
END_REASON_REFUSED_BY_HOST: EndReason
PENDING_REASON_UNSPECIFIED: PendingReason
PENDING_REASON_QUEUED: PendingReason
PENDING_REASON_NO_SITE_WITHIN_CAP: PendingReason
PENDING_REASON_NO_CAPACITY_WITHIN_CAP: PendingReason
PENDING_REASON_CANDIDATES_DRAINED: PendingReason
PENDING_REASON_WAITING_FOR_LOOSER_CAP: PendingReason
TIER_UNSPECIFIED: Tier
TIER_720P30: Tier
TIER_720P60: Tier
TIER_1080P60: Tier
TIER_1080P120: Tier
PLAYOUT_MODE_UNSPECIFIED: PlayoutMode
PLAYOUT_MODE_AUTO: PlayoutMode
PLAYOUT_MODE_LOW_LATENCY: PlayoutMode
PLAYOUT_MODE_SMOOTH: PlayoutMode

class TierSpec(_message.Message):
    __slots__ = ("tier", "width", "height", "fps", "bitrate_kbps")
    TIER_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    BITRATE_KBPS_FIELD_NUMBER: _ClassVar[int]
    tier: Tier
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    def __init__(self, tier: _Optional[_Union[Tier, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[int] = ..., bitrate_kbps: _Optional[int] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "venue_id", "seat_id", "zone_id", "game_id", "request_id", "patron_id", "state", "end_reason", "pending_reason", "host_id", "site_id", "tier", "latency_cap_ms", "slots", "latency_ms", "price_micros_per_slot_hour", "created_at", "updated_at", "placed_at", "ready_at", "streaming_at", "ended_at", "end_detail", "stream_stats", "resumes_session_id", "paid_time_s", "paid_until")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_ID_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PATRON_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_CAP_MS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PLACED_AT_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    STREAMING_AT_FIELD_NUMBER: _ClassVar[int]
    ENDED_AT_FIELD_NUMBER: _ClassVar[int]
    END_DETAIL_FIELD_NUMBER: _ClassVar[int]
    STREAM_STATS_FIELD_NUMBER: _ClassVar[int]
    RESUMES_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_S_FIELD_NUMBER: _ClassVar[int]
    PAID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    venue_id: str
    seat_id: str
    zone_id: str
    game_id: str
    request_id: str
    patron_id: str
    state: SessionState
    end_reason: EndReason
    pending_reason: PendingReason
    host_id: str
    site_id: str
    tier: Tier
    latency_cap_ms: int
    slots: int
    latency_ms: int
    price_micros_per_slot_hour: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    placed_at: _timestamp_pb2.Timestamp
    ready_at: _timestamp_pb2.Timestamp
    streaming_at: _timestamp_pb2.Timestamp
    ended_at: _timestamp_pb2.Timestamp
    end_detail: str
    stream_stats: StreamStats
    resumes_session_id: str
    paid_time_s: int
    paid_until: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., venue_id: _Optional[str] = ..., seat_id: _Optional[str] = ..., zone_id: _Optional[str] = ..., game_id: _Optional[str] = ..., request_id: _Optional[str] = ..., patron_id: _Optional[str] = ..., state: _Optional[_Union[SessionState, str]] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., pending_reason: _Optional[_Union[PendingReason, str]] = ..., host_id: _Optional[str] = ..., site_id: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., latency_cap_ms: _Optional[int] = ..., slots: _Optional[int] = ..., latency_ms: _Optional[int] = ..., price_micros_per_slot_hour: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ready_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., streaming_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ended_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_detail: _Optional[str] = ..., stream_stats: _Optional[_Union[StreamStats, _Mapping]] = ..., resumes_session_id: _Optional[str] = ..., paid_time_s: _Optional[int] = ..., paid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("fps_sent", "bitrate_kbps", "rtt_ms", "loss_pct", "encode_ms", "reported_at")
    FPS_SENT_FIELD_NUMBER: _ClassVar[int]
    BITRATE_KBPS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    LOSS_PCT_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    REPORTED_AT_FIELD_NUMBER: _ClassVar[int]
    fps_sent: float
    bitrate_kbps: int
    rtt_ms: float
    loss_pct: float
    encode_ms: float
    reported_at: _timestamp_pb2.Timestamp
    def __init__(self, fps_sent: _Optional[float] = ..., bitrate_kbps: _Optional[int] = ..., rtt_ms: _Optional[float] = ..., loss_pct: _Optional[float] = ..., encode_ms: _Optional[float] = ..., reported_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SessionTransition(_message.Message):
    __slots__ = ("seq", "from_state", "to_state", "end_reason", "at", "detail")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    from_state: SessionState
    to_state: SessionState
    end_reason: EndReason
    at: _timestamp_pb2.Timestamp
    detail: str
    def __init__(self, seq: _Optional[int] = ..., from_state: _Optional[_Union[SessionState, str]] = ..., to_state: _Optional[_Union[SessionState, str]] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class SessionDescription(_message.Message):
    __slots__ = ("type", "sdp")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SDP_FIELD_NUMBER: _ClassVar[int]
    type: str
    sdp: str
    def __init__(self, type: _Optional[str] = ..., sdp: _Optional[str] = ...) -> None: ...

class ImageFetch(_message.Message):
    __slots__ = ("image", "bytes_done", "bytes_total", "error")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    image: str
    bytes_done: int
    bytes_total: int
    error: str
    def __init__(self, image: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...
