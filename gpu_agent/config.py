"""The agent's host config: one TOML file, every field checked, errors naming the field.

host_id = "host-a1"                 # id slug, unique in the region
provider_id = "demo-provider"
site_id = "site-a"
broker = "127.0.0.1:50051"          # the broker's gRPC address (HOST:PORT, or unix:/PATH)
slots = 2                           # concurrent sessions, 1-256
gpu_class = "rtx4080"               # what the provider prices by
price_micros_per_slot_hour = 1500000
games_cached = ["demo"]             # images on local disk: GAME_ID or GAME_ID@VERSION
image_store = "/var/lib/cloudseat/images"   # optional: where pre-warmed images are written (gpu_agent.images)
image_fetch_bytes_per_s = 125000000 # how fast a pre-warm of a game without a registry image "fetches" (simulated)
image_disk_bytes = 200000000000     # optional: the most image_store may hold; least recently used images go first
image_fetch_workers = 8             # chunks fetched at once
image_fetch_retry_s = 300           # how long an unreachable registry is asked again before the fetch fails

peer_listen = "0.0.0.0:7443"        # optional: serve image chunks to the site's hosts here (mutual TLS with [tls])
peer_address = "10.0.0.5:7443"      # optional: where the site's hosts reach it (default: peer_listen's host, or the
                                    # first media address, with the port it got)

[registry]                          # optional: the image registry (OCI distribution API) and read-only credentials
url = "https://registry.example.net"
username = "reader"
password_file = "registry.password" # or password = "..." (the file keeps it out of the config); relative to this file
ca = ""                             # optional CA bundle for an https registry
media_addresses = ["127.0.0.1"]     # the only addresses ICE offers as host candidates
codec = "auto"                      # auto (NVENC when present, else H.264 in software) | h264 | vp8
playout_clean_s = 30                # a session in playout mode AUTO asks the seat for zero delay again after
                                    # this long without a receiver report that shows loss (1-3600)
drain_grace_s = 30                  # the agent's own shutdown (SIGTERM) only: how long running sessions may go on
                                    # before they are handed back for their seats to resume elsewhere. A provider's
                                    # drain (DrainHost) never ends sessions here: the broker moves them at its deadline

[tls]                               # mutual TLS with the broker: this host's certificate (CN = host_id, OU = agent),
cert = "host-a1.pem"                # its key, and the CA bundle that signed the brokers; paths relative to this file.
key = "host-a1.key"                 # `cloudseat-broker certs` makes development ones. Without [tls], the agent
ca = "ca.pem"                       # refuses to start unless insecure = true (for a broker with authentication off).

[[ice_servers]]                     # optional STUN/TURN
urls = ["stun:stun.example.net:3478"]
username = ""
credential = ""

[sources.trailer]                   # optional: a game id served from any FFmpeg-readable source
url = "/srv/trailer.mp4"            # a file (looped), a device (/dev/video0) or a grab (":0.0")
format = ""                         # FFmpeg input format, e.g. "v4l2" or "x11grab"
options = { framerate = "60" }
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpu_agent.errors import ConfigError

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_ADDRESS = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")
_CODECS = ("auto", "h264", "vp8")


@dataclasses.dataclass(frozen=True, slots=True)
class IceServerConfig:
    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class SourceConfig:
    url: str
    format: str = ""
    options: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: Path
    key: Path
    ca: Path


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryConfig:
    url: str
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)
    ca: Path | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AgentConfig:
    host_id: str
    provider_id: str
    site_id: str
    broker: str
    slots: int
    gpu_class: str
    price_micros_per_slot_hour: int
    games_cached: tuple[str, ...] = ("demo",)
    media_addresses: tuple[str, ...] = ("127.0.0.1",)
    codec: str = "auto"
    # On the agent's own shutdown (SIGTERM), how long running sessions may go on before they are handed back
    # HOST_DRAINED; a provider's drain never ends sessions here (the broker moves them at its deadline).
    drain_grace_s: float = 30.0
    # Playout mode AUTO: a clean spell this long after a lossy receiver report and the seat gets zero delay again.
    playout_clean_s: float = 30.0
    ice_servers: tuple[IceServerConfig, ...] = ()
    sources: tuple[tuple[str, SourceConfig], ...] = ()
    tls: TlsConfig | None = None
    # Plaintext to the broker: only for a broker that runs with authentication off (tests, a laptop).
    insecure: bool = False
    image_store: Path | None = None
    image_fetch_bytes_per_s: float = 125_000_000.0
    image_disk_bytes: int = 0  # 0: no budget but the disk's own size
    image_fetch_workers: int = 8
    image_fetch_retry_s: float = 300.0
    registry: RegistryConfig | None = None
    peer_listen: str = ""
    peer_address: str = ""


class _Reader:
    """Typed access to a parsed TOML table that names the field in every complaint."""

    def __init__(self, source: str, table: Mapping[str, Any], prefix: str = "") -> None:
        self.source, self.table, self.prefix = source, table, prefix

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, f"{self.prefix}{key}", problem)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        # bool is an int in Python; a config that says slots = true is still wrong.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            name = "a number" if isinstance(kind, tuple) else _KIND_NAMES.get(kind, kind.__name__)
            raise self.fail(key, f"must be {name}, not {type(value).__name__}")
        return value

    def ident(self, key: str, default: Any = ...) -> str:
        value: str = self.get(key, str, default)
        if not _ID.fullmatch(value):
            raise self.fail(key, "must be 1-64 characters of letters, digits, '.', '_', ':' or '-'")
        return value

    def int_range(self, key: str, lo: int, hi: int, default: Any = ...) -> int:
        value: int = self.get(key, int, default)
        if not lo <= value <= hi:
            raise self.fail(key, f"must be between {lo} and {hi}")
        return value

    def str_list(self, key: str, default: Any = ...) -> list[str]:
        value: list[Any] = self.get(key, list, default)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{key}[{i}]", "must be a string")
        return value


_KIND_NAMES = {int: "an integer", str: "a string", list: "a list", dict: "a table", float: "a number"}
_KNOWN = {
    "host_id", "provider_id", "site_id", "broker", "slots", "gpu_class", "price_micros_per_slot_hour",
    "games_cached", "media_addresses", "codec", "drain_grace_s", "playout_clean_s", "ice_servers", "sources", "tls",
    "insecure",
    "image_store", "image_fetch_bytes_per_s", "image_disk_bytes", "image_fetch_workers", "image_fetch_retry_s",
    "registry", "peer_listen", "peer_address",
}  # fmt: skip


def parse(text: str, source: str = "config", base: Path | None = None) -> AgentConfig:
    """Parse and check a host config; ConfigError names the first bad field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(file)", f"is not valid TOML: {exc}") from None
    r = _Reader(source, data)
    for key in data:
        if key not in _KNOWN:
            raise r.fail(key, "is not a known setting (typo?)")
    broker = r.get("broker", str)
    address = _ADDRESS.fullmatch(broker)
    local = broker.startswith("unix:/") and len(broker) > len("unix:/")
    if not local and (address is None or not 0 < int(address["port"]) < 65536):
        raise r.fail("broker", "must be HOST:PORT (or unix:/PATH for a broker on this machine)")
    games = r.str_list("games_cached", ["demo"])
    for i, g in enumerate(games):
        game, sep, version = g.partition("@")
        if not _ID.fullmatch(game) or (sep and not _ID.fullmatch(version)):
            raise r.fail(f"games_cached[{i}]", "must be a game id (or GAME_ID@VERSION)")
    store = r.get("image_store", str, None)
    rate = r.get("image_fetch_bytes_per_s", (int, float), 125_000_000.0)
    if not 1 <= rate <= 1e12:
        raise r.fail("image_fetch_bytes_per_s", "must be between 1 and 1e12")
    addresses = r.str_list("media_addresses", ["127.0.0.1"])
    if not addresses:
        raise r.fail("media_addresses", "must list at least one address")
    for i, a in enumerate(addresses):
        try:
            ipaddress.ip_address(a)
        except ValueError:
            raise r.fail(f"media_addresses[{i}]", "must be an IP address") from None
    codec = r.get("codec", str, "auto")
    if codec not in _CODECS:
        raise r.fail("codec", f"must be one of {', '.join(_CODECS)}")
    grace = r.get("drain_grace_s", (int, float), 30.0)
    if not 0 <= grace <= 3600:
        raise r.fail("drain_grace_s", "must be between 0 and 3600")
    playout_clean = r.get("playout_clean_s", (int, float), 30.0)
    if not 1 <= playout_clean <= 3600:
        raise r.fail("playout_clean_s", "must be between 1 and 3600")
    insecure = r.get("insecure", bool, False)
    tls = _tls(r, base or Path.cwd())
    if tls is None and not insecure:
        raise r.fail(
            "tls",
            "is required: the broker speaks mutual TLS (cert, key, ca; `cloudseat-broker certs` makes development "
            "ones), or set insecure = true for a broker running with authentication off",
        )
    if tls is not None and insecure:
        raise r.fail("insecure", "cannot be true with [tls]; choose one")
    retry = r.get("image_fetch_retry_s", (int, float), 300.0)
    if not 0 <= retry <= 86400:
        raise r.fail("image_fetch_retry_s", "must be between 0 and 86400")
    return AgentConfig(
        host_id=r.ident("host_id"),
        provider_id=r.ident("provider_id"),
        site_id=r.ident("site_id"),
        broker=broker,
        slots=r.int_range("slots", 1, 256),
        gpu_class=r.ident("gpu_class"),
        price_micros_per_slot_hour=r.int_range("price_micros_per_slot_hour", 0, 10**12),
        games_cached=tuple(games),
        media_addresses=tuple(addresses),
        codec=codec,
        drain_grace_s=float(grace),
        playout_clean_s=float(playout_clean),
        ice_servers=_ice_servers(r),
        sources=_sources(r),
        tls=tls,
        insecure=insecure,
        image_store=None
        if store is None
        else (Path(store) if Path(store).is_absolute() else (base or Path.cwd()) / store),
        image_fetch_bytes_per_s=float(rate),
        image_disk_bytes=r.int_range("image_disk_bytes", 0, 2**62, 0),
        image_fetch_workers=r.int_range("image_fetch_workers", 1, 64, 8),
        image_fetch_retry_s=float(retry),
        registry=_registry(r, base or Path.cwd()),
        peer_listen=_address(r, "peer_listen"),
        peer_address=_address(r, "peer_address"),
    )


def _address(r: _Reader, key: str) -> str:
    value: str = r.get(key, str, "")
    m = _ADDRESS.fullmatch(value)
    if value and (m is None or int(m["port"]) > 65535):
        raise r.fail(key, "must be HOST:PORT")
    return value


def _registry(r: _Reader, base: Path) -> RegistryConfig | None:
    entry = r.get("registry", dict, None)
    if entry is None:
        return None
    t = _Reader(r.source, entry, "registry.")
    for key in entry:
        if key not in ("url", "username", "password", "password_file", "ca"):
            raise t.fail(key, "is not a known setting (typo?)")
    url = t.get("url", str)
    if not re.fullmatch(r"https?://[A-Za-z0-9.\[\]:-]+(:\d{1,5})?/?", url):
        raise t.fail("url", "must be http://HOST[:PORT] or https://HOST[:PORT]")
    password = t.get("password", str, "")
    password_file = t.get("password_file", str, "")
    if password and password_file:
        raise t.fail("password_file", "cannot be given with password; choose one")
    if password_file:
        path = Path(password_file) if Path(password_file).is_absolute() else base / password_file
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise t.fail("password_file", f"cannot be read: {exc.strerror}") from None
    ca = t.get("ca", str, "")
    return RegistryConfig(
        url=url.rstrip("/"),
        username=t.get("username", str, ""),
        password=password,
        ca=(Path(ca) if Path(ca).is_absolute() else base / ca) if ca else None,
    )


def _tls(r: _Reader, base: Path) -> TlsConfig | None:
    entry = r.get("tls", dict, None)
    if entry is None:
        return None
    t = _Reader(r.source, entry, "tls.")
    for key in entry:
        if key not in ("cert", "key", "ca"):
            raise t.fail(key, "is not a known setting (cert, key, ca)")
    paths = {}
    for key in ("cert", "key", "ca"):
        path = Path(t.get(key, str))
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise t.fail(key, f"{str(path)!r} does not exist")
        paths[key] = path
    return TlsConfig(cert=paths["cert"], key=paths["key"], ca=paths["ca"])


def _ice_servers(r: _Reader) -> tuple[IceServerConfig, ...]:
    out = []
    for i, entry in enumerate(r.get("ice_servers", list, [])):
        if not isinstance(entry, dict):
            raise r.fail(f"ice_servers[{i}]", "must be a table")
        e = _Reader(r.source, entry, f"ice_servers[{i}].")
        urls = e.str_list("urls")
        for j, url in enumerate(urls):
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise e.fail(f"urls[{j}]", "must start with stun:, turn: or turns:")
        out.append(IceServerConfig(tuple(urls), e.get("username", str, ""), e.get("credential", str, "")))
    return tuple(out)


def _sources(r: _Reader) -> tuple[tuple[str, SourceConfig], ...]:
    out = []
    for game_id, entry in r.get("sources", dict, {}).items():
        if not _ID.fullmatch(game_id):
            raise r.fail(f"sources.{game_id}", "must be keyed by a game id")
        if not isinstance(entry, dict):
            raise r.fail(f"sources.{game_id}", "must be a table")
        e = _Reader(r.source, entry, f"sources.{game_id}.")
        options = e.get("options", dict, {})
        for k, v in options.items():
            if not isinstance(v, str):
                raise e.fail(f"options.{k}", "must be a string")
        out.append(
            (game_id, SourceConfig(e.get("url", str), e.get("format", str, ""), tuple(options.items())))
        )
    return tuple(out)


def load(path: Path) -> AgentConfig:
    """Read and check the config file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot be read: {exc.strerror}") from None
    return parse(text, str(path), path.parent)
