from cloudseat.v1 import common_pb2 as _common_pb2
from cloudseat.v1 import fleet_pb2 as _fleet_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "session_event", "negotiate_result", "goodbye")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    SESSION_EVENT_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATE_RESULT_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    session_event: SessionEvent
    negotiate_result: NegotiateResult
    goodbye: Goodbye
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., session_event: _Optional[_Union[SessionEvent, _Mapping]] = ..., negotiate_result: _Optional[_Union[NegotiateResult, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ...) -> None: ...

class BrokerMessage(_message.Message):
    __slots__ = ("registered", "start_session", "stop_session", "negotiate", "drain", "prewarm", "site_peers")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    START_SESSION_FIELD_NUMBER: _ClassVar[int]
    STOP_SESSION_FIELD_NUMBER: _ClassVar[int]
    NEGOTIATE_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    PREWARM_FIELD_NUMBER: _ClassVar[int]
    SITE_PEERS_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    start_session: StartSessionCommand
    stop_session: StopSessionCommand
    negotiate: NegotiateCommand
    drain: DrainCommand
    prewarm: PrewarmCommand
    site_peers: SitePeersCommand
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., start_session: _Optional[_Union[StartSessionCommand, _Mapping]] = ..., stop_session: _Optional[_Union[StopSessionCommand, _Mapping]] = ..., negotiate: _Optional[_Union[NegotiateCommand, _Mapping]] = ..., drain: _Optional[_Union[DrainCommand, _Mapping]] = ..., prewarm: _Optional[_Union[PrewarmCommand, _Mapping]] = ..., site_peers: _Optional[_Union[SitePeersCommand, _Mapping]] = ...) -> None: ...

class HostInventory(_message.Message):
    __slots__ = ("gpu_class", "gpus", "slots", "games_cached", "media_addresses", "price_micros_per_slot_hour", "peer_address")
    GPU_CLASS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    GAMES_CACHED_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_PER_SLOT_HOUR_FIELD_NUMBER: _ClassVar[int]
    PEER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    gpu_class: str
    gpus: _containers.RepeatedCompositeFieldContainer[_fleet_pb2.Gpu]
    slots: int
    games_cached: _containers.RepeatedScalarFieldContainer[str]
    media_addresses: _containers.RepeatedScalarFieldContainer[str]
    price_micros_per_slot_hour: int
    peer_address: str
    def __init__(self, gpu_class: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[_fleet_pb2.Gpu, _Mapping]]] = ..., slots: _Optional[int] = ..., games_cached: _Optional[_Iterable[str]] = ..., media_addresses: _Optional[_Iterable[str]] = ..., price_micros_per_slot_hour: _Optional[int] = ..., peer_address: _Optional[str] = ...) -> None: ...

class RunningSession(_message.Message):
    __slots__ = ("session_id", "state")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: _common_pb2.SessionState
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.SessionState, str]] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("host_id", "provider_id", "site_id", "epoch", "agent_version", "inventory", "running")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    provider_id: str
    site_id: str
    epoch: int
    agent_version: str
    inventory: HostInventory
    running: _containers.RepeatedCompositeFieldContainer[RunningSession]
    def __init__(self, host_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., site_id: _Optional[str] = ..., epoch: _Optional[int] = ..., agent_version: _Optional[str] = ..., inventory: _Optional[_Union[HostInventory, _Mapping]] = ..., running: _Optional[_Iterable[_Union[RunningSession, _Mapping]]] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("host_id", "epoch", "heartbeat_interval_ms", "lost_after_ms", "drained")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    LOST_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    epoch: int
    heartbeat_interval_ms: int
    lost_after_ms: int
    drained: bool
    def __init__(self, host_id: _Optional[str] = ..., epoch: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., lost_after_ms: _Optional[int] = ..., drained: bool = ...) -> None: ...

class SessionStats(_message.Message):
    __slots__ = ("session_id", "fps_sent", "bitrate_kbps", "rtt_ms", "loss_pct", "encode_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FPS_SENT_FIELD_NUMBER: _ClassVar[int]
    BITRATE_KBPS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    LOSS_PCT_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    fps_sent: float
    bitrate_kbps: int
    rtt_ms: float
    loss_pct: float
    encode_ms: float
    def __init__(self, session_id: _Optional[str] = ..., fps_sent: _Optional[float] = ..., bitrate_kbps: _Optional[int] = ..., rtt_ms: _Optional[float] = ..., loss_pct: _Optional[float] = ..., encode_ms: _Optional[float] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("seq", "cpu_load", "gpu_load", "sessions", "games_cached_changed", "games_cached", "draining", "image_fetches_changed", "image_fetches")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CPU_LOAD_FIELD_NUMBER: _ClassVar[int]
    GPU_LOAD_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    GAMES_CACHED_CHANGED_FIELD_NUMBER: _ClassVar[int]
    GAMES_CACHED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FETCHES_CHANGED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FETCHES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    cpu_load: float
    gpu_load: float
    sessions: _containers.RepeatedCompositeFieldContainer[SessionStats]
    games_cached_changed: bool
    games_cached: _containers.RepeatedScalarFieldContainer[str]
    draining: bool
    image_fetches_changed: bool
    image_fetches: _containers.RepeatedCompositeFieldContainer[_common_pb2.ImageFetch]
    def __init__(self, seq: _Optional[int] = ..., cpu_load: _Optional[float] = ..., gpu_load: _Optional[float] = ..., sessions: _Optional[_Iterable[_Union[SessionStats, _Mapping]]] = ..., games_cached_changed: bool = ..., games_cached: _Optional[_Iterable[str]] = ..., draining: bool = ..., image_fetches_changed: bool = ..., image_fetches: _Optional[_Iterable[_Union[_common_pb2.ImageFetch, _Mapping]]] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("session_id", "state", "end_reason", "detail")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    state: _common_pb2.SessionState
    end_reason: _common_pb2.EndReason
    detail: str
    def __init__(self, session_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.SessionState, str]] = ..., end_reason: _Optional[_Union[_common_pb2.EndReason, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NegotiateResult(_message.Message):
    __slots__ = ("correlation_id", "answer", "error")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    answer: _common_pb2.SessionDescription
    error: str
    def __init__(self, correlation_id: _Optional[str] = ..., answer: _Optional[_Union[_common_pb2.SessionDescription, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class StartSessionCommand(_message.Message):
    __slots__ = ("session_id", "game_id", "tier", "slots", "venue_id", "seat_id", "version", "image_ref", "image_digest", "playout")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    VENUE_ID_FIELD_NUMBER: _ClassVar[int]
    SEAT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PLAYOUT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    game_id: str
    tier: _common_pb2.TierSpec
    slots: int
    venue_id: str
    seat_id: str
    version: str
    image_ref: str
    image_digest: str
    playout: _common_pb2.PlayoutMode
    def __init__(self, session_id: _Optional[str] = ..., game_id: _Optional[str] = ..., tier: _Optional[_Union[_common_pb2.TierSpec, _Mapping]] = ..., slots: _Optional[int] = ..., venue_id: _Optional[str] = ..., seat_id: _Optional[str] = ..., version: _Optional[str] = ..., image_ref: _Optional[str] = ..., image_digest: _Optional[str] = ..., playout: _Optional[_Union[_common_pb2.PlayoutMode, str]] = ...) -> None: ...

class StopSessionCommand(_message.Message):
    __slots__ = ("session_id", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    reason: _common_pb2.EndReason
    def __init__(self, session_id: _Optional[str] = ..., reason: _Optional[_Union[_common_pb2.EndReason, str]] = ...) -> None: ...

class NegotiateCommand(_message.Message):
    __slots__ = ("correlation_id", "session_id", "offer")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    session_id: str
    offer: _common_pb2.SessionDescription
    def __init__(self, correlation_id: _Optional[str] = ..., session_id: _Optional[str] = ..., offer: _Optional[_Union[_common_pb2.SessionDescription, _Mapping]] = ...) -> None: ...

class DrainCommand(_message.Message):
    __slots__ = ("drained",)
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    drained: bool
    def __init__(self, drained: bool = ...) -> None: ...

class PrewarmCommand(_message.Message):
    __slots__ = ("game_id", "version", "image_size_bytes", "image_ref", "image_digest", "peers")
    GAME_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    game_id: str
    version: str
    image_size_bytes: int
    image_ref: str
    image_digest: str
    peers: _containers.RepeatedCompositeFieldContainer[SitePeer]
    def __init__(self, game_id: _Optional[str] = ..., version: _Optional[str] = ..., image_size_bytes: _Optional[int] = ..., image_ref: _Optional[str] = ..., image_digest: _Optional[str] = ..., peers: _Optional[_Iterable[_Union[SitePeer, _Mapping]]] = ...) -> None: ...

class SitePeersCommand(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[SitePeer]
    def __init__(self, peers: _Optional[_Iterable[_Union[SitePeer, _Mapping]]] = ...) -> None: ...

class SitePeer(_message.Message):
    __slots__ = ("host_id", "address")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    address: str
    def __init__(self, host_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...
