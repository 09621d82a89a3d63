"""`cloudseat-agent run --config HOST.toml`: the agent of one GPU host.

Flags fall back to environment variables named in their help.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from pathlib import Path

import structlog
from cloudseat import logs, settings
from cloudseat.settings import setting

from gpu_agent import config as config_module
from gpu_agent.errors import AgentError
from gpu_agent.link import BrokerLink, Outbox
from gpu_agent.media import IceServer, MediaConfig
from gpu_agent.sessions import SessionManager

log = structlog.get_logger("gpu_agent")


async def run(cfg: config_module.AgentConfig) -> int:
    media = MediaConfig(
        media_addresses=cfg.media_addresses,
        ice_servers=tuple(
            IceServer(urls=s.urls, username=s.username, credential=s.credential) for s in cfg.ice_servers
        ),
        codec=cfg.codec,
        playout_clean_s=cfg.playout_clean_s,
    )
    outbox = Outbox()
    sessions = SessionManager(cfg, media, outbox.put)
    link = BrokerLink(cfg, sessions, outbox)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(link.run())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if runner in done:
        stopper.cancel()
        runner.result()  # a RegistrationError ends the program with its message
        return 1
    log.info("shutting down: draining", grace_s=cfg.drain_grace_s, sessions=len(sessions.sessions))
    await sessions.shut_down(cfg.drain_grace_s)
    await link.stop()
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await runner
    log.info("agent stopped")
    return 0


@dataclasses.dataclass(frozen=True, slots=True)
class RunOptions:
    """`cloudseat-agent run`'s flags; everything about the host is in its config file."""

    config: Path = setting(help="the host config file, TOML", env="CLOUDSEAT_AGENT_CONFIG", required=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudseat-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the agent of this host")
    try:
        settings.add_arguments(p, RunOptions)
        logs.add_arguments(p)
        args = parser.parse_args(argv)
        options: RunOptions = settings.build(RunOptions, args)
        logs.configure_from(args)
    except settings.SettingsError as exc:
        print(f"cloudseat-agent: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = config_module.load(options.config)
        return asyncio.run(run(cfg))
    except AgentError as exc:
        print(f"cloudseat-agent: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
