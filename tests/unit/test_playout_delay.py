"""The playout-delay RTP header extension (gpu_agent.media.playout_delay): its codec, and a packet aiortc's sender
serialises with our map, read back by a parser written here from RFC 8285 (not aiortc's, not ours)."""

from __future__ import annotations

import struct

import pytest
from aiortc import RTCRtpSender, rtp
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters

from gpu_agent.media import playout_delay as pd

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def _extensions(packet: bytes) -> dict[int, bytes]:
    """The one-byte-header extension elements of an RTP packet (RFC 3550 header, RFC 8285 elements)."""
    first, _, _, _, _ = struct.unpack_from("!BBHII", packet)
    assert first >> 6 == 2, "RTP version 2"
    assert first & 0x10, "the X bit: the packet carries extensions"
    pos = 12 + 4 * (first & 0x0F)
    profile, words = struct.unpack_from("!HH", packet, pos)
    assert profile == 0xBEDE, f"one-byte header profile, not {profile:#x}"
    data, pos, out = packet[pos + 4 : pos + 4 + 4 * words], 0, {}
    while pos < len(data):
        if data[pos] == 0:  # padding
            pos += 1
            continue
        ident, length = data[pos] >> 4, (data[pos] & 0x0F) + 1
        out[ident] = data[pos + 1 : pos + 1 + length]
        pos += 1 + length
    return out


def _negotiated(*uris_ids: tuple[str, int]) -> RTCRtpParameters:
    return RTCRtpParameters(
        headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in uris_ids]
    )


def test_min_and_max_pack_into_12_bits_each_in_10_ms_units() -> None:
    assert pd.pack(pd.ZERO) == b"\x00\x00\x00"
    assert pd.pack(pd.PlayoutDelay(100, 200)) == bytes([0x00, 0xA0, 0x14])  # 10 and 20 units
    assert pd.pack(pd.PlayoutDelay(pd.MAX_MS, pd.MAX_MS)) == b"\xff\xff\xff"
    for delay in (pd.ZERO, pd.PlayoutDelay(0, 40), pd.PlayoutDelay(1230, 4560), pd.PlayoutDelay(pd.MAX_MS, pd.MAX_MS)):
        assert pd.unpack(pd.pack(delay)) == delay


@pytest.mark.parametrize(
    ("min_ms", "max_ms", "field"),
    [(-10, 0, "min_ms"), (5, 10, "min_ms"), (0, pd.MAX_MS + 10, "max_ms"), (20, 10, "min_ms")],
)
def test_a_delay_the_extension_cannot_carry_is_refused_naming_the_field(min_ms: int, max_ms: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        pd.PlayoutDelay(min_ms, max_ms)
    with pytest.raises(ValueError, match="3 bytes"):
        pd.unpack(b"\x00\x00")


def test_registering_adds_the_extension_to_aiortcs_video_table_once() -> None:
    pd.register()
    pd.register()
    video = [ext for ext in HEADER_EXTENSIONS["video"] if ext.uri == pd.URI]
    assert len(video) == 1
    ids = [ext.id for ext in HEADER_EXTENSIONS["video"]]
    assert len(ids) == len(set(ids)) and 1 <= video[0].id <= 14
    assert all(ext.uri != pd.URI for ext in HEADER_EXTENSIONS["audio"])


def test_a_packet_written_with_the_map_carries_zero_delay_beside_aiortcs_own_extensions() -> None:
    mapping = pd.ExtensionsMap(pd.ZERO)
    mapping.configure(_negotiated((MID, 9), (ABS_SEND_TIME, 2), (pd.URI, 5)))
    packet = rtp.RtpPacket(payload_type=102, sequence_number=7, timestamp=90_000, ssrc=1234, payload=b"\x65" * 40)
    packet.extensions.mid = "0"
    packet.extensions.abs_send_time = 0x123456
    data = packet.serialize(mapping)

    elements = _extensions(data)
    assert elements == {9: b"0", 2: b"\x12\x34\x56", 5: b"\x00\x00\x00"}
    assert pd.unpack(elements[5]) == pd.ZERO
    # aiortc's own parser still reads the packet, its extensions and its payload as they were.
    plain = rtp.HeaderExtensionsMap()
    plain.configure(_negotiated((MID, 9), (ABS_SEND_TIME, 2)))
    back = rtp.RtpPacket.parse(data, plain)
    assert (back.sequence_number, back.timestamp, back.payload) == (7, 90_000, b"\x65" * 40)
    assert (back.extensions.mid, back.extensions.abs_send_time) == ("0", 0x123456)


def test_without_the_extension_negotiated_the_packet_is_aiortcs_own() -> None:
    ours, theirs = pd.ExtensionsMap(pd.ZERO), rtp.HeaderExtensionsMap()
    for mapping in (ours, theirs):
        mapping.configure(_negotiated((MID, 1)))
    packet = rtp.RtpPacket(payload_type=96, sequence_number=1, timestamp=1, ssrc=1, payload=b"x")
    packet.extensions.mid = "video"
    assert packet.serialize(ours) == packet.serialize(theirs)
    assert 5 not in _extensions(packet.serialize(ours))


async def test_attach_gives_a_real_sender_the_map_its_packets_are_written_with() -> None:
    """The private attribute `attach` replaces is the one aiortc's sender serialises with: a renamed attribute in a
    new aiortc would leave the extension unwritten, and this test fails instead."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("video", direction="sendonly")
        sender: RTCRtpSender = transceiver.sender
        before = vars(sender)["_RTCRtpSender__rtp_header_extensions_map"]
        pd.attach(sender)
        after = vars(sender)["_RTCRtpSender__rtp_header_extensions_map"]
        assert isinstance(before, rtp.HeaderExtensionsMap) and isinstance(after, pd.ExtensionsMap)
    finally:
        await pc.close()


def test_the_policy_asks_for_zero_until_the_link_loses_then_for_the_receivers_own_until_clean_again() -> None:
    policy = pd.PlayoutPolicy(lossy=0.005, clean_for_us=30_000_000)
    assert policy.delay == pd.ZERO
    assert policy.on_report(0.0, 1_000_000) is None
    assert policy.on_report(1 / 256, 2_000_000) is None  # one packet in a report's few hundred: not a lossy link
    assert policy.on_report(3 / 256, 3_000_000) == pd.ADAPTIVE
    assert policy.on_report(0.0, 20_000_000) is None  # clean, but not for long enough
    assert policy.on_report(5 / 256, 25_000_000) is None  # lossy again: the clean spell starts afresh
    assert policy.on_report(0.0, 54_000_000) is None
    assert policy.on_report(0.0, 55_000_000) == pd.ZERO
    assert policy.delay == pd.ZERO and pd.pack(pd.ADAPTIVE) == bytes([0x00, 0x03, 0xE8])


def test_a_delay_set_on_the_map_is_written_from_the_next_packet_on() -> None:
    mapping = pd.ExtensionsMap(pd.ZERO)
    mapping.configure(_negotiated((pd.URI, 5)))
    packet = rtp.RtpPacket(payload_type=96, sequence_number=1, timestamp=1, ssrc=1, payload=b"x")
    assert pd.unpack(_extensions(packet.serialize(mapping))[5]) == pd.ZERO
    mapping.set_delay(pd.ADAPTIVE)
    assert pd.unpack(_extensions(packet.serialize(mapping))[5]) == pd.ADAPTIVE
    with pytest.raises(ValueError, match="lossy"):
        pd.PlayoutPolicy(lossy=0)


def test_each_mode_keeps_its_own_delay_whatever_the_reports_say() -> None:
    low, smooth = pd.for_mode(pd.Mode.LOW_LATENCY), pd.for_mode(pd.Mode.SMOOTH)
    assert low.delay == pd.ZERO and smooth.delay == pd.ADAPTIVE
    for now_us, loss in ((1_000_000, 0.0), (2_000_000, 0.5), (90_000_000, 0.0)):
        assert low.on_report(loss, now_us) is None and smooth.on_report(loss, now_us) is None
    assert low.delay == pd.ZERO and smooth.delay == pd.ADAPTIVE
    auto = pd.for_mode(pd.Mode.AUTO, clean_for_us=2_000_000)
    assert isinstance(auto, pd.PlayoutPolicy) and auto.clean_for_us == 2_000_000
    assert auto.delay == pd.ZERO and auto.on_report(0.1, 1_000_000) == pd.ADAPTIVE
    assert auto.on_report(0.0, 3_000_000) == pd.ZERO
