"""The service tiers a zone can promise: picture size, frame rate and the bitrate the stream targets."""

from __future__ import annotations

import dataclasses
import enum


class Tier(enum.StrEnum):
    T720P30 = "720P30"
    T720P60 = "720P60"
    T1080P60 = "1080P60"
    T1080P120 = "1080P120"


@dataclasses.dataclass(frozen=True, slots=True)
class TierSpec:
    tier: Tier
    width: int
    height: int
    fps: int
    bitrate_kbps: int


# Bitrates follow common game-streaming defaults (Moonlight: 20 Mbit/s at 1080p60), scaled by pixels per second.
SPECS: dict[Tier, TierSpec] = {
    Tier.T720P30: TierSpec(Tier.T720P30, 1280, 720, 30, 6_000),
    Tier.T720P60: TierSpec(Tier.T720P60, 1280, 720, 60, 10_000),
    Tier.T1080P60: TierSpec(Tier.T1080P60, 1920, 1080, 60, 20_000),
    Tier.T1080P120: TierSpec(Tier.T1080P120, 1920, 1080, 120, 35_000),
}
