"""A placement benchmark instance: a region (hosts, latencies, leases) and an arrival trace, plus its JSON form.

The JSON schema is documented in docs/placement.md. Loading validates every field and raises `InstanceError`
whose message names the bad field by its path, e.g. `instance.hosts[3].free_slots: must be an integer >= 0`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.placement import GameImage, Host, LatencyMatrix, LatencyPolicy, Lease, Params

SCHEMA_VERSION = 1


class InstanceError(ValueError):
    """An instance file that does not match the schema; the message names the field."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """A request as it arrives: the target is not fixed yet (it loosens while the request waits)."""

    id: str
    venue_id: str
    game_id: str
    cap_ms: int
    arrival_ms: int
    duration_ms: int
    slots: int = 1


@dataclass(frozen=True, slots=True)
class Running:
    """A session already running when the trace starts; its slots are not in its host's free slots."""

    host_id: str
    slots: int
    end_ms: int


@dataclass(slots=True)
class Instance:
    """Everything a placement benchmark run needs."""

    hosts: list[Host]
    latency: LatencyMatrix
    leases: list[Lease]
    requests: list[TraceRequest]
    running: list[Running] = field(default_factory=list)
    params: Params = field(default_factory=Params)
    #: the games' current images by game id (placement prices a cold start by the bytes a host lacks)
    images: dict[str, GameImage] = field(default_factory=dict)


# -- writing ----------------------------------------------------------------------------------------------------


def to_json(instance: Instance) -> dict[str, Any]:
    """The instance as a JSON-ready object (the schema in docs/placement.md)."""
    params = instance.params
    return {
        "version": SCHEMA_VERSION,
        "params": {
            "latency_weight_micros_per_ms": params.latency_weight_micros_per_ms,
            "cold_start_penalty_micros": params.cold_start_penalty_micros,
            "cold_start_micros_per_gib": params.cold_start_micros_per_gib,
            "stay_pending_cost_micros": params.stay_pending_cost_micros,
            "latency_policy": [list(step) for step in params.latency_policy.steps],
        },
        "hosts": [
            {
                "id": h.id,
                "site_id": h.site_id,
                "gpu_class": h.gpu_class,
                "free_slots": h.free_slots,
                "total_slots": h.total_slots,
                "price_micros": h.price_micros,
                "games": sorted(h.games),
                "drained": h.drained,
                "online": h.online,
                **({"images": sorted(h.images)} if h.images else {}),
            }
            for h in instance.hosts
        ],
        "images": {
            game: {"version": i.version, "size_bytes": i.size_bytes, "lacking_from": dict(i.lacking_from)}
            for game, i in sorted(instance.images.items())
        },
        "latency": [[v, s, ms] for (v, s), ms in sorted(instance.latency.items())],
        "leases": [
            {
                k: v
                for k, v in {
                    "id": lease.id,
                    "venue_id": lease.venue_id,
                    "gpu_class": lease.gpu_class,
                    "slots": lease.unused_slots,
                    "site_id": lease.site_id,
                    "max_latency_ms": lease.max_latency_ms,
                }.items()
                if v is not None
            }
            for lease in instance.leases
        ],
        "requests": [
            {
                "id": r.id,
                "venue_id": r.venue_id,
                "game_id": r.game_id,
                "cap_ms": r.cap_ms,
                "arrival_ms": r.arrival_ms,
                "duration_ms": r.duration_ms,
                "slots": r.slots,
            }
            for r in instance.requests
        ],
        "running": [{"host_id": s.host_id, "slots": s.slots, "end_ms": s.end_ms} for s in instance.running],
    }


def write(instance: Instance, path: Path) -> None:
    """Write the instance as JSON."""
    path.write_text(json.dumps(to_json(instance), separators=(",", ":")))


# -- reading ----------------------------------------------------------------------------------------------------


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InstanceError(f"{path}: must be an object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InstanceError(f"{path}: must be a list")
    return value


def _str(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise InstanceError(f"{path}.{key}: must be a non-empty string")
    return value


def _int(obj: Mapping[str, Any], key: str, path: str, minimum: int = 0, default: int | None = None) -> int:
    if key not in obj and default is not None:
        return default
    value = obj.get(key)
    # bool is an int in Python; true/false in a count field is a mistake, not 1/0
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InstanceError(f"{path}.{key}: must be an integer ≥ {minimum}")
    return value


def _bool(obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise InstanceError(f"{path}.{key}: must be true or false")
    return value


def _unique(ids: list[str], path: str, what: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(ids):
        if value in seen:
            raise InstanceError(f"{path}[{i}].id: duplicate {what} id {value!r}")
        seen.add(value)


def _params(raw: Any) -> Params:
    if raw is None:
        return Params()
    obj = _obj(raw, "instance.params")
    default = Params()
    policy = default.latency_policy
    if "latency_policy" in obj:
        steps_raw = _list(obj["latency_policy"], "instance.params.latency_policy")
        steps: list[tuple[int, int]] = []
        for i, step in enumerate(steps_raw):
            where = f"instance.params.latency_policy[{i}]"
            if (
                not isinstance(step, list)
                or len(step) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in step)
            ):
                raise InstanceError(f"{where}: must be [waited_ms, percent_of_cap]")
            steps.append((step[0], step[1]))
        try:
            policy = LatencyPolicy(tuple(steps))
        except ValueError as exc:
            raise InstanceError(f"instance.params.latency_policy: {str(exc).split(': ', 1)[-1]}") from exc
    pending = _int(obj, "stay_pending_cost_micros", "instance.params", 1, default.stay_pending_cost_micros)
    return Params(
        latency_weight_micros_per_ms=_int(
            obj, "latency_weight_micros_per_ms", "instance.params", 0, default.latency_weight_micros_per_ms
        ),
        cold_start_penalty_micros=_int(
            obj, "cold_start_penalty_micros", "instance.params", 0, default.cold_start_penalty_micros
        ),
        cold_start_micros_per_gib=_int(
            obj, "cold_start_micros_per_gib", "instance.params", 0, default.cold_start_micros_per_gib
        ),
        stay_pending_cost_micros=pending,
        latency_policy=policy,
    )


def from_json(raw: Any) -> Instance:
    """Validate a parsed JSON document and build the instance; raises `InstanceError` naming the bad field."""
    top = _obj(raw, "instance")
    version = top.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise InstanceError(f"instance.version: must be {SCHEMA_VERSION}")
    params = _params(top.get("params"))

    hosts: list[Host] = []
    for i, item in enumerate(_list(top.get("hosts"), "instance.hosts")):
        path = f"instance.hosts[{i}]"
        h = _obj(item, path)
        total = _int(h, "total_slots", path, 1)
        free = _int(h, "free_slots", path, 0)
        if free > total:
            raise InstanceError(f"{path}.free_slots: must be ≤ total_slots ({total})")
        games_raw = _list(h.get("games", []), f"{path}.games")
        for j, game in enumerate(games_raw):
            if not isinstance(game, str) or not game:
                raise InstanceError(f"{path}.games[{j}]: must be a non-empty string")
        images_raw = _list(h.get("images", []), f"{path}.images")
        for j, image in enumerate(images_raw):
            if not isinstance(image, str) or image.count("@") != 1 or "" in image.split("@"):
                raise InstanceError(f"{path}.images[{j}]: must be GAME_ID@VERSION")
        hosts.append(
            Host(
                id=_str(h, "id", path),
                site_id=_str(h, "site_id", path),
                gpu_class=_str(h, "gpu_class", path),
                free_slots=free,
                total_slots=total,
                price_micros=_int(h, "price_micros", path, 0),
                games=frozenset(games_raw),
                drained=_bool(h, "drained", path, False),
                online=_bool(h, "online", path, True),
                images=frozenset(images_raw),
            )
        )
    _unique([h.id for h in hosts], "instance.hosts", "host")
    host_ids = {h.id for h in hosts}

    pairs: dict[tuple[str, str], int] = {}
    for i, item in enumerate(_list(top.get("latency"), "instance.latency")):
        path = f"instance.latency[{i}]"
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not item[0]
            or not isinstance(item[1], str)
            or not item[1]
        ):
            raise InstanceError(f"{path}: must be [venue_id, site_id, ms]")
        if not isinstance(item[2], int) or isinstance(item[2], bool) or item[2] < 0:
            raise InstanceError(f"{path}[2]: must be an integer ≥ 0")
        if (item[0], item[1]) in pairs:
            raise InstanceError(f"{path}: duplicate pair ({item[0]}, {item[1]})")
        pairs[(item[0], item[1])] = item[2]
    latency = LatencyMatrix.from_mapping(pairs)

    leases: list[Lease] = []
    for i, item in enumerate(_list(top.get("leases", []), "instance.leases")):
        path = f"instance.leases[{i}]"
        obj = _obj(item, path)
        site = obj.get("site_id")
        if site is not None and (not isinstance(site, str) or not site):
            raise InstanceError(f"{path}.site_id: must be a non-empty string or absent")
        max_lat = _int(obj, "max_latency_ms", path, 0) if obj.get("max_latency_ms") is not None else None
        if site is not None and max_lat is not None:
            raise InstanceError(f"{path}.max_latency_ms: give site_id or max_latency_ms, not both")
        leases.append(
            Lease(
                id=_str(obj, "id", path),
                venue_id=_str(obj, "venue_id", path),
                gpu_class=_str(obj, "gpu_class", path),
                unused_slots=_int(obj, "slots", path, 1),
                site_id=site,
                max_latency_ms=max_lat,
            )
        )
    _unique([lease.id for lease in leases], "instance.leases", "lease")

    requests: list[TraceRequest] = []
    for i, item in enumerate(_list(top.get("requests"), "instance.requests")):
        path = f"instance.requests[{i}]"
        obj = _obj(item, path)
        requests.append(
            TraceRequest(
                id=_str(obj, "id", path),
                venue_id=_str(obj, "venue_id", path),
                game_id=_str(obj, "game_id", path),
                cap_ms=_int(obj, "cap_ms", path, 1),
                arrival_ms=_int(obj, "arrival_ms", path, 0),
                duration_ms=_int(obj, "duration_ms", path, 1),
                slots=_int(obj, "slots", path, 1, 1),
            )
        )
    _unique([r.id for r in requests], "instance.requests", "request")

    running: list[Running] = []
    for i, item in enumerate(_list(top.get("running", []), "instance.running")):
        path = f"instance.running[{i}]"
        obj = _obj(item, path)
        host_id = _str(obj, "host_id", path)
        if host_id not in host_ids:
            raise InstanceError(f"{path}.host_id: unknown host {host_id!r}")
        running.append(Running(host_id, _int(obj, "slots", path, 1), _int(obj, "end_ms", path, 0)))
    images: dict[str, GameImage] = {}
    for game, item in _obj(top.get("images", {}), "instance.images").items():
        path = f"instance.images[{game!r}]"
        obj = _obj(item, path)
        lacking: dict[str, int] = {}
        for version, value in _obj(obj.get("lacking_from", {}), f"{path}.lacking_from").items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InstanceError(f"{path}.lacking_from[{version!r}]: must be an integer ≥ 0")
            lacking[version] = value
        images[game] = GameImage(_str(obj, "version", path), _int(obj, "size_bytes", path, 0), lacking)
    return Instance(
        hosts=hosts,
        latency=latency,
        leases=leases,
        requests=requests,
        running=running,
        params=params,
        images=images,
    )


def read(path: Path) -> Instance:
    """Read and validate an instance file; raises `InstanceError` (also for unreadable or non-JSON files)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InstanceError(f"instance: cannot read {path}: {exc.strerror}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InstanceError(f"instance: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    return from_json(raw)
