"""A bare gRPC unary echo: the yardstick a load test divides the broker's throughput by.

Absolute rates on a shared 2-core machine drift from run to run; the rate of the simplest possible RPC through the
same stack, measured in the same run, does not drift the same way relative to them. So a benchmark reports
`starts_per_s / echo_rps`: how many bare round trips one session start costs.

The server is a grpc.aio server in its own process (as the broker is), with one generic handler and no
(de)serialisers, so no proto is needed; the client is the same grpc.aio channel code the patrons use, closed loop
with a fixed number of calls in flight.

    python -m loadtest.echo --listen 127.0.0.1:0      # prints "port N" when serving; SIGTERM stops it
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter
from typing import Any

SERVICE = "cloudseat.loadtest.Echo"
METHOD = f"/{SERVICE}/Echo"
#: About the size of a StartSessionRequest on the wire.
PAYLOAD = b"x" * 96


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def serve(listen: str) -> tuple[Any, int]:
    """Start the echo server on `listen`; returns (server, bound port)."""
    import grpc
    from grpc import aio

    server = aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}),)
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    return server, port


async def drive(
    target: str, seconds: float, concurrency: int, channels: int, t_zero: float
) -> dict[str, Any]:
    """Call the echo closed loop, `concurrency` calls in flight over `channels` connections, from `t_zero`
    (time.monotonic) for `seconds`; returns calls completed, errors by status and the seconds measured."""
    from grpc import aio

    chans = [
        aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, channels))
    ]
    calls = [ch.unary_unary(METHOD) for ch in chans]
    errors: Counter[str] = Counter()
    done = 0
    try:
        # Warm the connections up before the clock starts.
        await asyncio.gather(*(call(PAYLOAD, timeout=10) for call in calls))
        await asyncio.sleep(max(0.0, t_zero - time.monotonic()))
        end = time.monotonic() + seconds

        async def loop(i: int) -> None:
            nonlocal done
            call = calls[i % len(calls)]
            while time.monotonic() < end:
                try:
                    await call(PAYLOAD, timeout=10)
                    done += 1
                except aio.AioRpcError as exc:
                    errors[exc.code().name] += 1

        started = time.monotonic()
        await asyncio.gather(*(loop(i) for i in range(max(1, concurrency))))
        elapsed = time.monotonic() - started
    finally:
        for ch in chans:
            await ch.close()
    return {"calls": done, "errors": dict(errors), "seconds": elapsed}


async def _main(listen: str) -> int:
    server, port = await serve(listen)
    print(f"port {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.echo", description="the bare gRPC echo server")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    args = parser.parse_args(argv)
    return asyncio.run(_main(args.listen))


if __name__ == "__main__":
    sys.exit(main())
