import datetime

from cloudseat.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from cloudseat.v1 import fleet_pb2 as _fleet_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartSessionRequest(_message.Message):
    __slots__ = ("request_id", "venue_id", "seat_id", "game_id", "patron_id", "slots", "zone_id", "resume", "paid_time_s", "wait_for_placement_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_ID_FIELD_NUMBER: _ClassVar[int]
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    PATRON_ID_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    ZONE_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    PAID_TIME_S_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_PLACEMENT_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    venue_id: str
    seat_id: str
    game_id: str
    patron_id: str
    slots: int
    zone_id: str
    resume: Resume
    paid_time_s: int
    wait_for_placement_ms: int
    def __init__(self, request_id: _Optional[str] = ..., venue_id: _Optional[str] = ..., seat_id: _Optional[str] = ..., game_id: _Optional[str] = ..., patron_id: _Optional[str] = ..., slots: _Optional[int] = ..., zone_id: _Optional[str] = ..., resume: _Optional[_Union[Resume, _Mapping]] = ..., paid_time_s: _Optional[int] = ..., wait_for_placement_ms: _Optional[int] = ...) -> None: ...

class Resume(_message.Message):
    __slots__ = ("session_id", "session_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    session_token: str
    def __init__(self, session_id: _Optional[str] = ..., session_token: _Optional[str] = ...) -> None: ...

class StartSessionResponse(_message.Message):
    __slots__ = ("session", "session_token", "created", "queue_position", "queue_length")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    session_token: str
    created: bool
    queue_position: int
    queue_length: int
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ..., session_token: _Optional[str] = ..., created: bool = ..., queue_position: _Optional[int] = ..., queue_length: _Optional[int] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id", "include_history")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_HISTORY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    include_history: bool
    def __init__(self, session_id: _Optional[str] = ..., include_history: bool = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session", "history")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    history: _containers.RepeatedCompositeFieldContainer[_common_pb2.SessionTransition]
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_common_pb2.SessionTransition, _Mapping]]] = ...) -> None: ...

class WatchSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SessionUpdate(_message.Message):
    __slots__ = ("session", "queue_position", "queue_length", "warnings", "time_left_s", "time_warning_s", "time_up", "grace_left_s", "move_in_s", "move_warning_s")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    TIME_LEFT_S_FIELD_NUMBER: _ClassVar[int]
    TIME_WARNING_S_FIELD_NUMBER: _ClassVar[int]
    TIME_UP_FIELD_NUMBER: _ClassVar[int]
    GRACE_LEFT_S_FIELD_NUMBER: _ClassVar[int]
    MOVE_IN_S_FIELD_NUMBER: _ClassVar[int]
    MOVE_WARNING_S_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    queue_position: int
    queue_length: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    time_left_s: int
    time_warning_s: int
    time_up: bool
    grace_left_s: int
    move_in_s: int
    move_warning_s: int
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ..., queue_position: _Optional[int] = ..., queue_length: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ..., time_left_s: _Optional[int] = ..., time_warning_s: _Optional[int] = ..., time_up: bool = ..., grace_left_s: _Optional[int] = ..., move_in_s: _Optional[int] = ..., move_warning_s: _Optional[int] = ...) -> None: ...

class NegotiateRequest(_message.Message):
    __slots__ = ("session_id", "session_token", "offer")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    session_token: str
    offer: _common_pb2.SessionDescription
    def __init__(self, session_id: _Optional[str] = ..., session_token: _Optional[str] = ..., offer: _Optional[_Union[_common_pb2.SessionDescription, _Mapping]] = ...) -> None: ...

class NegotiateResponse(_message.Message):
    __slots__ = ("answer",)
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    answer: _common_pb2.SessionDescription
    def __init__(self, answer: _Optional[_Union[_common_pb2.SessionDescription, _Mapping]] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("session_id", "session_token", "detail")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    session_token: str
    detail: str
    def __init__(self, session_id: _Optional[str] = ..., session_token: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _common_pb2.Session
    def __init__(self, session: _Optional[_Union[_common_pb2.Session, _Mapping]] = ...) -> None: ...

class ReportStreamStatsRequest(_message.Message):
    __slots__ = ("session_id", "session_token", "samples")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    session_token: str
    samples: _containers.RepeatedCompositeFieldContainer[StreamSample]
    def __init__(self, session_id: _Optional[str] = ..., session_token: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[StreamSample, _Mapping]]] = ...) -> None: ...

class StreamSample(_message.Message):
    __slots__ = ("at", "fps", "rtt_ms")
    AT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    at: _timestamp_pb2.Timestamp
    fps: float
    rtt_ms: float
    def __init__(self, at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fps: _Optional[float] = ..., rtt_ms: _Optional[float] = ...) -> None: ...

class ReportStreamStatsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class ListGamesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGamesResponse(_message.Message):
    __slots__ = ("games",)
    GAMES_FIELD_NUMBER: _ClassVar[int]
    games: _containers.RepeatedCompositeFieldContainer[_fleet_pb2.Game]
    def __init__(self, games: _Optional[_Iterable[_Union[_fleet_pb2.Game, _Mapping]]] = ...) -> None: ...
