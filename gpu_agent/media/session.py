"""One session's WebRTC: a peer connection to the seat, our video track on it, the seat's input channels into it.

The seat offers (a recvonly video transceiver and two data channels, see `cloudseat.seat_protocol`); `answer()`
answers. A later offer with the same ICE credentials renegotiates the running peer connection. An offer with new
ICE credentials is the seat starting over after a network blip (an ICE restart, which aiortc cannot do in place),
and so is any offer after the connection failed: the session then builds a fresh peer connection and track on the
same source, and the old one goes quietly once the new one has answered (an offer that fails leaves the old one
running). A browser seat must come back with a new RTCPeerConnection too: ``restartIce()`` on its old one would
meet a new DTLS certificate.

The session owns its source: `close()` closes it.

Callbacks: ``on_streaming()`` once in the session's life, when a peer is connected and the first frame has gone
out; ``on_closed(reason)`` when the current peer connection fails or the seat closes it (not for our own `close()`,
nor for a connection replaced by a newer offer). The session stays usable after ``on_closed``: a new offer brings
the seat back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    clock,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)
from cloudseat import ice, seat_protocol

from gpu_agent.media import playout_delay
from gpu_agent.media.config import MediaConfig
from gpu_agent.media.encoder import VideoEncoder, nvenc_available
from gpu_agent.media.errors import InvalidOffer, MediaError, SessionClosed
from gpu_agent.media.feedback import BitrateController, reception_report
from gpu_agent.media.offer import choose_codec, parse_offer
from gpu_agent.media.track import SourceTrack, monotonic_us
from gpu_agent.workloads import FrameSource

log = structlog.get_logger(__name__)

INPUT_CHANNELS = (seat_protocol.MOTION_CHANNEL, seat_protocol.RELIABLE_CHANNEL)
_DROP_LOG_EVERY_US = 1_000_000  # a seat that floods bad input gets one log line a second, not one per message


@dataclass(frozen=True, slots=True)
class SessionStats:
    fps_sent: float
    bitrate_kbps: float
    rtt_ms: float
    loss_pct: float
    encode_ms: float
    target_kbps: float = 0.0  # the encoder's target: the tier's bitrate, or less when the seat's REMB says so
    inputs_applied: int = 0
    inputs_dropped: int = 0  # malformed, oversized or unknown input messages
    codec: str = ""  # the FFmpeg encoder: "libx264", "h264_nvenc" or "libvpx" ("" before the first answer)


class MediaSession:
    def __init__(
        self,
        session_id: str,
        source: FrameSource,
        *,
        bitrate_kbps: int,
        config: MediaConfig,
        on_streaming: Callable[[], None],
        on_closed: Callable[[str], None],
        playout: playout_delay.Mode = playout_delay.Mode.AUTO,
    ) -> None:
        if bitrate_kbps <= 0:
            raise MediaError(f"bitrate must be positive, not {bitrate_kbps} kbps")
        self.session_id = session_id
        self._source = source
        self._config = config
        self._on_streaming: Callable[[], None] | None = on_streaming
        self._on_closed = on_closed
        self._log = log.bind(session_id=session_id)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"media-{session_id[:16]}"
        )
        self._bitrate = BitrateController(bitrate_kbps * 1000)
        self._zone_playout = playout
        self.playout_mode = playout  # the zone's, or the seat's own from its latest offer (offer.py)
        self._playout_policy = playout_delay.for_mode(playout, clean_for_us=self._clean_for_us())
        self._playout_map: playout_delay.ExtensionsMap | None = None  # the current peer connection's
        self._lock = asyncio.Lock()
        self._pc: RTCPeerConnection | None = None
        self._track: SourceTrack | None = None
        self._codec: str | None = None
        self._remote_ufrag: str | None = None
        self._reported_closed: weakref.WeakSet[RTCPeerConnection] = (
            weakref.WeakSet()
        )  # no on_closed for these
        self._closed = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._rtt_s: float | None = None
        self._loss_fraction = 0.0
        self._inputs_applied = 0
        self._inputs_dropped = 0
        self._drops_unlogged = 0
        self._last_drop_log_us = 0

    # -- negotiation --------------------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Answer the seat's offer; the answer carries every local candidate (gathering is complete)."""
        async with self._lock:
            if self._closed:
                raise SessionClosed("the media session is closed")
            offer = parse_offer(offer_sdp)
            codec = choose_codec(self._config.codec, offer)
            self._choose_playout(offer.playout or self._zone_playout)
            current = self._pc
            fresh = (
                current is None
                or current.connectionState in ("failed", "closed")
                or offer.ice_ufrag != self._remote_ufrag
                or codec != self._codec
            )
            playout_map = None
            if fresh:
                pc, track, playout_map = await self._build_peer_connection(codec)
            else:
                assert current is not None
                pc, track = current, None
            try:
                with ice.host_addresses(self._config.media_addresses):
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
                    await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:  # aiortc raises ValueError, InvalidStateError, OperationError, ...
                if track is not None:  # a fresh connection that failed goes; the running one stays
                    await self._close_quietly(pc, track)
                raise InvalidOffer(f"cannot answer the offer: {type(exc).__name__}: {exc}") from exc
            if track is not None:
                old_pc, old_track = self._pc, self._track
                self._pc, self._track, self._codec = pc, track, codec
                self._playout_map = playout_map
                await self._close_quietly(old_pc, old_track)
            self._remote_ufrag = offer.ice_ufrag
            self._log.info(
                "answered", codec=codec, renegotiation=not fresh, encoder=self._encoder_name(),
                playout=self.playout_mode.value,
            )  # fmt: skip
            return pc.localDescription.sdp

    def _clean_for_us(self) -> int:
        return round(self._config.playout_clean_s * 1e6)

    def _choose_playout(self, mode: playout_delay.Mode) -> None:
        """Play out in ``mode`` from now on: a new policy when it changes, its delay on the running connection's
        packets at once (a renegotiation keeps the connection)."""
        if mode is self.playout_mode:
            return
        self.playout_mode = mode
        self._playout_policy = playout_delay.for_mode(mode, clean_for_us=self._clean_for_us())
        if self._playout_map is not None:
            self._playout_map.set_delay(self._playout_policy.delay)

    async def _build_peer_connection(
        self, codec: str
    ) -> tuple[RTCPeerConnection, SourceTrack, playout_delay.ExtensionsMap]:
        servers = [
            RTCIceServer(
                urls=[s.urls] if isinstance(s.urls, str) else list(s.urls),
                username=s.username or None,
                credential=s.credential or None,
            )
            for s in self._config.ice_servers
        ]
        # An explicit empty list: with None, aiortc would use Google's public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        # The first check opens a trial NVENC session where there is an NVIDIA device: not on the event loop.
        hardware = codec == "h264" and await asyncio.to_thread(nvenc_available)
        encoder = VideoEncoder(
            codec, self._source.width, self._source.height, self._source.fps, self._bitrate.target_bps,
            hardware=hardware, threads=self._config.encoder_threads,
        )  # fmt: skip
        track = SourceTrack(
            self.session_id, self._source, encoder, self._executor,
            on_first_frame_sent=self._first_frame_sent, on_failed=lambda reason: self._report_closed(pc, reason),
        )  # fmt: skip
        transceiver = pc.addTransceiver(track, direction="sendonly")
        _prefer(transceiver, codec)
        # Render each frame as soon as it is decoded, when the seat offers the playout-delay extension; the seat's
        # receiver reports move it to the receiver's adaptive delay while the link loses packets (mode AUTO; the
        # other modes keep one delay).
        playout = playout_delay.attach(transceiver.sender, self._playout_policy.delay)
        self._hook_rtcp(transceiver.sender, encoder, playout)
        pc.on("connectionstatechange", lambda: self._connection_state_changed(pc))
        pc.on("datachannel", self._data_channel)
        return pc, track, playout

    async def _close_quietly(self, pc: RTCPeerConnection | None, track: SourceTrack | None) -> None:
        """Close a peer connection without reporting it: it is replaced, refused, or the session closes."""
        if pc is not None:
            self._reported_closed.add(pc)
        if track is not None:
            track.stop()
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    # -- events -------------------------------------------------------------------------------------------

    def _connection_state_changed(self, pc: RTCPeerConnection) -> None:
        state = pc.connectionState
        self._log.info("peer connection state", state=state, current=pc is self._pc)
        if pc is not self._pc:
            return
        if state == "connected" and self._track is not None and self._track.sent:
            self._first_frame_sent()
        if state in ("failed", "closed"):
            self._report_closed(pc, f"peer connection {state}")
            if state == "failed":
                # Free its sockets now; the seat comes back, if it does, with a new offer and a new connection.
                task = asyncio.ensure_future(pc.close())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _report_closed(self, pc: RTCPeerConnection, reason: str) -> None:
        if pc is not self._pc or pc in self._reported_closed or self._closed:
            return
        self._reported_closed.add(pc)
        self._on_closed(reason)

    def _first_frame_sent(self) -> None:
        pc = self._pc
        if self._on_streaming is None or pc is None or pc.connectionState != "connected":
            return
        callback, self._on_streaming = self._on_streaming, None
        self._log.info("streaming")
        callback()

    def _data_channel(self, channel: RTCDataChannel) -> None:
        if channel.label not in INPUT_CHANNELS:
            self._log.warning("unknown data channel ignored", label=channel.label)
            return
        channel.on("message", lambda message: self._input(channel.label, message))

    def _input(self, label: str, message: bytes | str) -> None:
        try:
            msg = seat_protocol.decode_input(message)
        except seat_protocol.InputError as exc:
            self._inputs_dropped += 1
            self._drops_unlogged += 1
            now = monotonic_us()
            if now - self._last_drop_log_us >= _DROP_LOG_EVERY_US:
                self._log.warning(
                    "input dropped", channel=label, error=type(exc).__name__, detail=str(exc),
                    size=len(message), dropped_since_last_log=self._drops_unlogged,
                )  # fmt: skip
                self._last_drop_log_us, self._drops_unlogged = now, 0
            return
        self._inputs_applied += 1
        self._source.apply_input(msg)

    def _hook_rtcp(
        self, sender: RTCRtpSender, encoder: VideoEncoder, playout: playout_delay.ExtensionsMap
    ) -> None:
        """See the receiver's feedback before aiortc does: REMB steers our encoder (aiortc would only tell its own
        encoder, which does not run), PLI/FIR ask it for a keyframe (aiortc's flag only reaches its own encoder),
        receiver reports give RTT and loss. The RTP router calls ``_handle_rtcp_packet`` on the sender object, so
        wrapping that one attribute of this sender is enough; aiortc's handling runs unchanged after ours."""
        original = sender._handle_rtcp_packet

        async def handle(packet: AnyRtcpPacket) -> None:
            try:
                self._feedback(packet, sender._ssrc, encoder, playout)
            except Exception:  # feedback must never break aiortc's RTCP handling
                self._log.exception("rtcp feedback failed")
            await original(packet)

        sender._handle_rtcp_packet = handle  # type: ignore[method-assign]

    def _feedback(
        self, packet: AnyRtcpPacket, ssrc: int, encoder: VideoEncoder, playout: playout_delay.ExtensionsMap
    ) -> None:
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == ssrc:
                    r = reception_report(
                        clock.current_ntp_time(),
                        report.lsr,
                        report.dlsr,
                        report.fraction_lost,
                        report.packets_lost,
                    )
                    if r.rtt_s is not None:
                        self._rtt_s = r.rtt_s
                    self._loss_fraction = r.loss_fraction
                    delay = self._playout_policy.on_report(r.loss_fraction, monotonic_us())
                    if delay is not None:
                        playout.set_delay(delay)
                        self._log.info(
                            "playout delay", min_ms=delay.min_ms, max_ms=delay.max_ms,
                            loss_pct=round(r.loss_fraction * 100, 2), negotiated=playout.id is not None,
                        )  # fmt: skip
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR) and packet.media_ssrc == ssrc:
                encoder.request_keyframe()
            elif packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return
                if ssrc in ssrcs:
                    target = self._bitrate.on_remb(bitrate, monotonic_us())
                    if target is not None:
                        self._log.info("bitrate", target_kbps=target // 1000, remb_kbps=bitrate // 1000)
                        encoder.set_bitrate(target)

    # -- stats and end ------------------------------------------------------------------------------------

    def _encoder_name(self) -> str:
        return self._track.encoder.name if self._track is not None else ""

    def stats(self) -> SessionStats:
        """Now: fps and bitrate sent over the last 2 s, the median time per frame in the worker (capture and
        encode) over those frames, RTT and loss from the seat's latest receiver report (0 before the first)."""
        sent = list(self._track.sent) if self._track is not None else []
        fps = bitrate = encode_ms = 0.0
        if len(sent) >= 2:
            span_s = (sent[-1].sent_us - sent[0].sent_us) / 1e6
            if span_s > 0:
                fps = (len(sent) - 1) / span_s
                bitrate = sum(f.size for f in sent[1:]) * 8 / span_s / 1000
        if sent:
            encode_ms = sorted(f.encode_ms for f in sent)[len(sent) // 2]
        return SessionStats(
            fps_sent=fps,
            bitrate_kbps=bitrate,
            rtt_ms=(self._rtt_s or 0.0) * 1000,
            loss_pct=self._loss_fraction * 100,
            encode_ms=encode_ms,
            target_kbps=self._bitrate.target_bps / 1000,
            inputs_applied=self._inputs_applied,
            inputs_dropped=self._inputs_dropped,
            codec=self._encoder_name(),
        )

    async def close(self) -> None:
        """Close the peer connection and release the source. Idempotent; no ``on_closed`` for this."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            pc, track = self._pc, self._track
            self._pc = self._track = None
            await self._close_quietly(pc, track)
            for task in list(self._tasks):
                with contextlib.suppress(Exception):
                    await task
        loop = asyncio.get_running_loop()
        # The worker thread may be inside the source or the encoder: close the source after it is done.
        await loop.run_in_executor(None, self._executor.shutdown, True)
        self._source.close()
        self._log.info("media closed")


def _prefer(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Offer only ``codec`` (and its retransmission format), so the negotiated codec is the one we encode."""
    capabilities = RTCRtpSender.getCapabilities("video")
    wanted = (f"video/{codec}", "video/rtx")
    transceiver.setCodecPreferences([c for c in capabilities.codecs if c.mimeType.lower() in wanted])
