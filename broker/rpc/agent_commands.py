"""What the broker tells an agent, as the contract's messages: start, stop, drain, pre-warm, site peers, negotiate.

Built from session and host changes (hub notifications carry what a start needs: broker.store's session_change) and
from the rows the agent service reads when an agent reconnects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cloudseat.v1 import agent_pb2, common_pb2

from broker import tiers
from broker.rpc import convert


def start_command(session: Mapping[str, Any]) -> agent_pb2.BrokerMessage:
    spec = tiers.SPECS[tiers.Tier(session["tier"])]
    return agent_pb2.BrokerMessage(
        start_session=agent_pb2.StartSessionCommand(
            session_id=str(session["session_id"]),
            game_id=session["game_id"],
            tier=convert.tier_spec(spec),
            slots=session["slots"],
            venue_id=session["venue_id"],
            seat_id=session["seat_id"],
            version=session.get("version") or "",
            image_ref=session.get("image_ref") or "",
            image_digest=session.get("image_digest") or "",
            # A change or row from before the column existed has none: AUTO, the column's default.
            playout=convert.PLAYOUT_TO_PB[session.get("playout") or "AUTO"],
        )
    )


def stop_command(session_id: str, reason: str) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(
        stop_session=agent_pb2.StopSessionCommand(
            session_id=session_id, reason=convert.END_REASON_TO_PB[reason]
        )
    )


def drain_command(drained: bool) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(drain=agent_pb2.DrainCommand(drained=drained))


def prewarm_command(image: Mapping[str, Any]) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(
        prewarm=agent_pb2.PrewarmCommand(
            game_id=image["game_id"],
            version=image["version"],
            image_size_bytes=image["image_size_bytes"],
            image_ref=image.get("image_ref") or "",
            image_digest=image.get("image_digest") or "",
            peers=[agent_pb2.SitePeer(host_id=h, address=a) for h, a in image.get("peers") or []],
        )
    )


def site_peers_command(peers: Sequence[tuple[str, str]]) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(
        site_peers=agent_pb2.SitePeersCommand(
            peers=[agent_pb2.SitePeer(host_id=h, address=a) for h, a in peers]
        )
    )


def negotiate_command(
    correlation_id: str, session_id: str, offer: common_pb2.SessionDescription
) -> agent_pb2.BrokerMessage:
    return agent_pb2.BrokerMessage(
        negotiate=agent_pb2.NegotiateCommand(
            correlation_id=correlation_id, session_id=session_id, offer=offer
        )
    )
