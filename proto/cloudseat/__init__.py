"""cloudseat's shared layer: what the broker, the GPU agent and the seat all build on, depending on none of them.

    v1/              the contract: the .proto files and the Python generated from them
    client           the typed asyncio client of the broker (BrokerClient, AgentLinkClient)
    errors           the error tree, one class per gRPC status
    validate         request-field checks that name the field
    resume           which ended sessions a seat may resume
    retry            when to ask again after a refused StartSession (the broker's pushback, jittered backoff)
    tls              certificates that name a role and a host; credentials that follow rotated files
    logs             structlog, set up once per program, and the log flags
    settings         a program's flags, environment variables and defaults from its config dataclass
    seat_protocol    the frame stamp and the input messages between agent and seat
    ice              WebRTC host candidates only on the addresses a program names
    web              the HTTP plumbing of the consoles and the kiosk (aiohttp)

Each module needs only the base install except `ice` (aiortc's ICE: the agent's and the seat's extra) and `web`
(aiohttp: the broker's and the seat's). tests/unit/test_layers.py keeps the layering and the extras honest.
"""
