"""A bad link for `cloudseat-loadtest stream --link-loss-pct P --link-rate-mbit R`: the whole run in a network
namespace of its own, whose loopback loses and queues packets.

The run (broker, agent, seats) talks over 127.0.0.1 only, so the namespace's own loopback is the link between agent
and seat; nothing outside the namespace is touched. `run_in_namespace` starts the same command again under
``unshare --net`` (root, or user namespaces); the child, seeing ``IN_NAMESPACE`` set, calls `apply` first:

- loss: nftables drops ``P`` % of the UDP packets (the media, RTCP, ICE; not the broker's gRPC nor the kiosk's
  HTTP, which are TCP) at random on their way in, so the sender sees nothing (a drop on the way out would fail its
  ``sendto`` with EPERM, which no real network does);
- jitter: ``tc`` shapes the loopback to ``R`` Mbit/s with a token bucket, so each frame's packets queue behind
  each other and behind the frame before: their delay varies with the frames' sizes (a keyframe's most).

Why not ``tc netem`` (loss with a delay distribution, what the issue asked for): this machine's kernel is built
without it (nor fq, sfq, codel or the nftables queue to a user-space delayer); a token bucket (tbf) is what it
has. The jitter this gives is not netem's Gaussian one: the benchmark reports the jitter the seat measured
(getStats ``jitter``, RFC 3550) beside the figures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Final

IN_NAMESPACE: Final = "CLOUDSEAT_LOADTEST_IN_NETNS"
MTU: Final = 1500
TBF_BURST: Final = "16kb"  # about ten full packets at once
TBF_LATENCY: Final = "200ms"  # a queue longer than this drops: far past any frame's size at these rates


def nft_rules(loss_pct: float) -> str:
    """The nftables table that drops ``loss_pct`` % of incoming UDP packets at random (to 0.01 %)."""
    if not 0 <= loss_pct <= 100:
        raise ValueError(f"link_loss_pct must be within 0..100, not {loss_pct}")
    per_10000 = round(loss_pct * 100)
    return (
        "table inet cloudseat_link {\n"
        "  chain in { type filter hook input priority 0; policy accept;\n"
        f"    meta l4proto udp numgen random mod 10000 < {per_10000} drop\n"
        "  }\n"
        "}\n"
    )


def tc_command(rate_mbit: float) -> list[str]:
    """The ``tc`` command that shapes the loopback to ``rate_mbit``."""
    if rate_mbit <= 0:
        raise ValueError(f"link_rate_mbit must be positive, not {rate_mbit}")
    return ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", f"{rate_mbit}mbit", "burst", TBF_BURST,
            "latency", TBF_LATENCY]  # fmt: skip


def apply(loss_pct: float, rate_mbit: float) -> None:
    """In the namespace: loopback up with an Ethernet MTU (a token bucket passes no packet bigger than its burst,
    and loopback's own MTU is 64 KiB), then the loss and the shaping asked for (0: none)."""
    subprocess.run(["ip", "link", "set", "lo", "mtu", str(MTU), "up"], check=True)
    if loss_pct > 0:
        subprocess.run(["nft", "-f", "-"], input=nft_rules(loss_pct).encode(), check=True)
    if rate_mbit > 0:
        subprocess.run(tc_command(rate_mbit), check=True)


def run_in_namespace(argv: list[str]) -> int:
    """Run ``python -m loadtest ARGV`` again in a new network namespace; its exit code."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise RuntimeError("a bad link needs unshare (util-linux) to make a network namespace")
    env = {**os.environ, IN_NAMESPACE: "1"}
    return subprocess.run([unshare, "--net", "--", sys.executable, "-m", "loadtest", *argv], env=env).returncode
