"""What the receiver's RTCP feedback means for the sender. Pure: values and clocks come in as arguments.

- REMB (receiver estimated maximum bitrate) → the encoder's target, clamped to the tier: never above the tier's
  bitrate (aiortc's own clamp of 0.5-3 Mbps does not apply, as we encode ourselves), never below a floor that
  keeps a picture; a decrease applies at once, an increase at most once a second, and changes under 10% are
  ignored (each change may cost the encoder a reconfiguration).
- Receiver reports → round-trip time (RFC 3550 §6.4.1: arrival time - LSR - DLSR, in 1/65536 s) and loss.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_BITRATE_BPS = 250_000
_HYSTERESIS = 0.10
_INCREASE_EVERY_US = 1_000_000


class BitrateController:
    def __init__(self, max_bps: int) -> None:
        if max_bps <= 0:
            raise ValueError(f"bitrate must be positive, not {max_bps}")
        self.max_bps = max_bps
        self.min_bps = min(max_bps, max(MIN_BITRATE_BPS, max_bps // 10))
        self.target_bps = max_bps
        self.estimate_bps: int | None = None  # the last REMB heard
        self._last_increase_us: int | None = None

    def on_remb(self, bitrate_bps: int, now_us: int) -> int | None:
        """Take a REMB; return the new target when the encoder should change, else None."""
        self.estimate_bps = bitrate_bps
        wanted = max(self.min_bps, min(self.max_bps, bitrate_bps))
        if wanted == self.target_bps:
            return None
        at_bound = wanted in (self.min_bps, self.max_bps)
        if abs(wanted - self.target_bps) < _HYSTERESIS * self.target_bps and not at_bound:
            return None
        if wanted > self.target_bps:
            if self._last_increase_us is not None and now_us - self._last_increase_us < _INCREASE_EVERY_US:
                return None
            self._last_increase_us = now_us
        self.target_bps = wanted
        return wanted


@dataclass(frozen=True, slots=True)
class ReceptionReport:
    rtt_s: float | None
    loss_fraction: float  # of the packets expected since the previous report, 0..1
    packets_lost: int  # cumulative


def reception_report(
    now_ntp: int, lsr: int, dlsr: int, fraction_lost: int, packets_lost: int
) -> ReceptionReport:
    """Interpret one report block; ``now_ntp`` is the 64-bit NTP time at arrival (aiortc.clock.current_ntp_time)."""
    rtt: float | None = None
    if lsr:
        arrival = (now_ntp >> 16) & 0xFFFFFFFF
        delta = (arrival - lsr - dlsr) & 0xFFFFFFFF
        if delta < 60 * 65536:  # anything longer is a wrapped or bogus report
            rtt = delta / 65536
    return ReceptionReport(rtt, fraction_lost / 256, packets_lost)
