"""docs/pilot.md's walkthrough ("your own pilot"), step by step, on the local system `scripts/up` starts:

the example region applied (dry run first, then for real, then again: nothing changes), a token file per seat of its
venue, a certificate for its GPU host and the agent started from the example config, the lease that waited for the
host, and the seat's kiosk started with its token file, in headless Chromium, playing the demo game on the pilot's
host. Every command is the documented one, run as its own process; only what a test must choose differs: free ports
instead of the fixed ones, ICE on 127.0.0.1 only (the tests' network rule) instead of the host's LAN address, and
paths under the test's folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration import browser as b

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REGION = ROOT / "docs" / "examples" / "region.yaml"
AGENT_TOML = ROOT / "docs" / "examples" / "agent.toml"


def _env() -> dict[str, str]:
    # The local system's own embedded database, as on a fresh machine: no database named from outside.
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CLOUDSEAT_DATABASE_URL")}


async def _cli(cwd: Path, module: str, *args: str) -> str:
    """One documented command (`cloudseat-broker ...` is `python -m broker ...`); its stdout, after exit code 0."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=cwd, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode == 0, (module, args, out.decode(), err.decode())
    return out.decode()


async def _start(cwd: Path, log: Path, module: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=cwd, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=log.open("wb"),
    )  # fmt: skip


async def _line(proc: asyncio.subprocess.Process, pattern: str, timeout_s: float) -> re.Match[str]:
    """Read the process's stdout until a line matches `pattern`."""
    assert proc.stdout is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, f"the process exited before printing {pattern!r}"
            if m := re.search(pattern, line):
                return m


async def _get(cwd: Path, data: Path, kind: str, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(
        await _cli(cwd, "broker", "get", kind, *args, "-o", "json", "--data-dir", str(data))
    )
    return rows


async def test_your_own_pilot_word_for_word(tmp_path: Path, artifacts_dir: Path) -> None:
    data = tmp_path / "data"
    creds = data / "credentials"
    work = tmp_path / "clone"  # where the walkthrough's relative paths (pilot/...) land
    work.mkdir()
    procs: list[asyncio.subprocess.Process] = []
    try:
        # 0. The local system (`./scripts/up` is `cloudseat-broker dev` after installing); no demo agents or kiosk
        # are needed for the pilot, and ports are free ones.
        dev = await _start(
            work, tmp_path / "dev.log", "broker", "dev", "--listen", "127.0.0.1:0", "--data-dir", str(data),
            "--agent-listen", "127.0.0.1:0", "--agents", "0", "--kiosk", "off", "--http-listen", "off",
        )  # fmt: skip
        procs.append(dev)
        up = await _line(dev, r"up on 127\.0\.0\.1:(\d+) .*agents connect on 127\.0\.0\.1:(\d+)", 90)
        port, agent_port = up.group(1), up.group(2)

        # 1. Apply the region: what it would do, then do it; again, and nothing changes.
        dry = await _cli(work, "broker", "apply", "-f", str(REGION), "--dry-run", "--data-dir", str(data))
        assert re.search(r"venue\s+pilot-cafe\s+would create", dry), dry
        would = re.search(r"dry run: (\d+) to create, 0 to change, .*\(nothing written\)", dry)
        assert would and int(would.group(1)) > 0, dry
        assert "pilot-cafe" not in json.dumps(await _get(work, data, "venues"))  # a dry run writes nothing
        applied = await _cli(work, "broker", "apply", "-f", str(REGION), "--data-dir", str(data))
        assert re.search(rf"^{would.group(1)} created, 0 changed", applied, re.M), applied
        again = await _cli(work, "broker", "apply", "-f", str(REGION), "--data-dir", str(data))
        assert re.search(r"^0 created, 0 changed", again, re.M), again
        venues = json.dumps(await _get(work, data, "venues"))
        assert "pilot-cafe" in venues and "Asia/Shanghai" in venues
        seats = await _get(work, data, "seats", "--venue", "pilot-cafe")
        assert len(seats) >= 2

        # 2. A token file per seat, readable by its owner only.
        await _cli(
            work, "broker", "token", "--key", str(creds / "token-key.pem"), "--role", "seat",
            "--venue", "pilot-cafe", "--all-seats", "--out-dir", "pilot/tokens", "--data-dir", str(data),
        )  # fmt: skip
        token_file = work / "pilot" / "tokens" / "a-01.token"
        assert len(list((work / "pilot" / "tokens").glob("*.token"))) == len(seats)
        assert token_file.stat().st_mode & 0o077 == 0

        # 3. The GPU host: its certificate from the local CA, the example config beside it, the agent started.
        await _cli(work, "broker", "certs", "--out", str(creds), "--host", "pilot-sh-01")
        host_dir = work / "pilot" / "host"
        (host_dir / "credentials").mkdir(parents=True)
        for name in ("ca.pem", "agents/pilot-sh-01.pem", "agents/pilot-sh-01.key"):
            shutil.copy(creds / name, host_dir / "credentials")
        config = AGENT_TOML.read_text()
        # The walkthrough's sed puts the host's LAN address in; here ICE stays on 127.0.0.1, and the port is free.
        config = config.replace(', "192.0.2.10"', "").replace("127.0.0.1:50052", f"127.0.0.1:{agent_port}")
        assert f"127.0.0.1:{agent_port}" in config and "192.0.2.10" not in config.split("#")[0]
        (host_dir / "agent.toml").write_text(config)
        agent = await _start(work, tmp_path / "agent.log", "gpu_agent", "run", "--config", "pilot/host/agent.toml")
        procs.append(agent)
        async with asyncio.timeout(60):
            while not any(
                h.get("host_id") == "pilot-sh-01" and str(h.get("status", "")).lower() == "online"
                for h in await _get(work, data, "hosts")
            ):
                await asyncio.sleep(0.5)
        # The lease waited for the host; now it is made, and nothing else changes.
        leased = await _cli(work, "broker", "apply", "-f", str(REGION), "--data-dir", str(data))
        assert re.search(r"lease\s+\S+\s+created", leased) and re.search(r"^1 created, 0 changed", leased, re.M), (
            leased
        )

        # 4. Play at a seat: its kiosk with its token file, in the browser.
        kiosk = await _start(
            work, tmp_path / "kiosk.log", "thin_client", "kiosk", "--broker", f"127.0.0.1:{port}",
            "--venue", "pilot-cafe", "--seat", "a-01", "--token-file", "pilot/tokens/a-01.token",
            "--ca", str(creds / "ca.pem"), "--listen", "127.0.0.1:0", "--ice-address", "127.0.0.1",
        )  # fmt: skip
        procs.append(kiosk)
        url = (await _line(kiosk, r"(http://127\.0\.0\.1:\d+/?)", 30)).group(1)
        async with b.chromium() as chromium:
            page = await b.seat_page(chromium, url)
            await page.goto(url)
            await b.wait_state(page, ["idle"], 20)
            await page.click('button[data-game-id="demo"]')
            await b.wait_state(page, ["playing"], 45)
            await page.wait_for_function("() => cloudseat.stats.framesDecoded >= 20", timeout=20_000)
            await page.screenshot(path=str(artifacts_dir / "pilot-seat-a-01.png"))
        sessions = json.dumps(await _get(work, data, "sessions"))
        assert "pilot-sh-01" in sessions and "a-01" in sessions
    finally:
        for proc in reversed(procs):
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(15):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
