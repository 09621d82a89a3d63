"""The browser client: `cloudseat-client kiosk` serves the seat's kiosk page and relays it to the broker.

    server.py       the aiohttp server on the seat: the page, its JSON API, the seat's credentials, the gRPC relay
    static/         the page: index.html, kiosk.css, kiosk.js (the app) and protocol.js (the stamp and input codec,
                    built from `cloudseat.seat_protocol.protocol_description()`, which the server hands out)

The browser's own WebRTC stack is the agent's peer; the server only relays the offer and the answer. docs/kiosk.md
describes the page, its API and `window.cloudseat`.

`CHROMIUM_FLAGS` are what the seat's Chromium needs to play: autoplay without a click, and real host addresses in its
offer (Chromium hides them behind mDNS names otherwise, which the kiosk's address filter and aioice cannot use).
"""

from __future__ import annotations

from typing import Final

CHROMIUM_FLAGS: Final = (
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # Loopback candidates, for a seat whose agent runs on the same machine (tests, benchmarks, a demo laptop).
    # Chromium also needs the page's origin to hold the camera or microphone permission before it offers any
    # address but the default route's: see docs/kiosk.md.
    "--allow-loopback-in-peer-connection",
    # Keep the seat's page at full speed when its window is covered or loses focus (a venue's overlay, a
    # notification): Chromium otherwise throttles the timers and rendering of a page it thinks is not seen.
    # Measured with no cost to the stream (docs/kiosk.md#chromium-flags-measured).
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
)
