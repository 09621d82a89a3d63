"""`cloudseat-broker apply` and `get` on a real PostgreSQL: the example region applied, applied again (nothing
changes), a dry run and a bad file that write nothing, and the example agent config joining the applied region."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from cloudseat import tls
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2

from broker import cli, issuing
from broker.config import BrokerConfig, SecurityConfig
from broker.server import Broker
from broker.store import database, fleet, venues
from tests.integration.conftest import FAST

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
REGION = EXAMPLES / "region.yaml"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`cloudseat-broker ARGV` in this process: exit code, stdout, stderr. The command configures logging for its
    own stderr (captured here, closed after): the test's configuration is put back."""
    saved = structlog.get_config()
    capsys.readouterr()
    try:
        code = cli.main([*argv, "--log-level", "warning"])
    finally:
        structlog.configure(**saved)
    out, err = capsys.readouterr()
    return code, out, err


def counts(db_url: str) -> dict[str, int]:
    """Rows per table the region writes, and the audit log's."""

    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(db_url)
        try:
            return {
                t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                for t in (
                    "providers", "sites", "prices", "host_enrolments", "games", "venues", "zones", "seats",
                    "venue_site_latency", "leases", "audit_log",
                )
            }  # fmt: skip
        finally:
            await conn.close()

    return asyncio.run(read())


def zone_modes(db_url: str) -> dict[str, str]:
    """The pilot venue's zones' playout modes as the database holds them."""

    async def read() -> dict[str, str]:
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch("SELECT zone_id, playout FROM zones WHERE venue_id = 'pilot-cafe'")
            return {r["zone_id"]: r["playout"] for r in rows}
        finally:
            await conn.close()

    return asyncio.run(read())


def test_the_example_region_applies_once_and_then_changes_nothing(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = counts(db_url)
    code, out, _ = run_cli(capsys, "apply", "-f", str(REGION), "--dry-run", "--database-url", db_url)
    assert code == 0
    assert re.search(r"^venue\s+pilot-cafe\s+would create$", out, re.MULTILINE)
    assert re.search(
        r"^lease\s+pilot-cafe-evenings\s+deferred\s+site 'sh-pudong' has not 1 rtx4090", out, re.M
    )
    assert out.rstrip().endswith(
        "dry run: 27 to create, 0 to change, 0 unchanged, 1 deferred (nothing written)"
    )
    assert counts(db_url) == empty  # the dry run wrote nothing, not even its audit row

    code, out, _ = run_cli(capsys, "apply", "-f", str(REGION), "--database-url", db_url)
    assert code == 0 and out.rstrip().endswith("27 created, 0 changed, 0 unchanged, 1 deferred")
    after = counts(db_url)
    assert {k: after[k] - empty[k] for k in after if k != "audit_log"} == {
        "providers": 2, "sites": 3, "prices": 4, "host_enrolments": 2, "games": 2, "venues": 1, "zones": 2,
        "seats": 8, "venue_site_latency": 3, "leases": 0,
    }  # fmt: skip

    code, out, _ = run_cli(capsys, "apply", "-f", str(REGION), "--database-url", db_url)
    assert code == 0 and out.rstrip().endswith("0 created, 0 changed, 27 unchanged, 1 deferred")
    assert not re.search(r"\b(created|changed)$", out.split("\n", 1)[1], re.MULTILINE)
    again = counts(db_url)
    assert {k: again[k] for k in again if k != "audit_log"} == {
        k: after[k] for k in after if k != "audit_log"
    }
    assert again["audit_log"] == after["audit_log"] + 1  # the second apply's own row, nothing else

    code, out, _ = run_cli(capsys, "get", "venues", "--database-url", db_url)
    assert code == 0
    assert out.splitlines()[0].split() == ["VENUE", "NAME", "TIME", "ZONE", "ZONES", "SEATS", "LIVE"]
    assert re.search(r"^pilot-cafe\s+Pilot Internet Cafe, Xuhui\s+Asia/Shanghai\s+2\s+8\s+0$", out, re.M)
    code, out, _ = run_cli(capsys, "get", "seats", "--venue", "pilot-cafe", "--database-url", db_url)
    assert out.splitlines()[0].split()[:6] == ["VENUE", "SEAT", "ZONE", "TIER", "CAP", "MS"]
    assert out.splitlines()[0].split()[6] == "PLAYOUT"
    assert re.search(r"^pilot-cafe\s+e-02\s+esports\s+1080P120\s+10\s+LOW_LATENCY\s+-$", out, re.M)
    assert re.search(r"^pilot-cafe\s+a-01\s+standard\s+720P60\s+30\s+AUTO\s+-$", out, re.M)
    # The file's mode written; the zone that names none made with the column's default.
    assert zone_modes(db_url) == {"standard": "AUTO", "esports": "LOW_LATENCY"}
    assert len(out.splitlines()) == 1 + 8
    code, out, _ = run_cli(capsys, "get", "sites", "--database-url", db_url)
    assert re.search(
        r"^sh-pudong\s+sh-edge\s+cn-east\s+Pudong edge room, Shanghai\s+0/0\s+"
        r"rtx4080 3\.20 CNY \(\+1 bands\), rtx4090 4\.50 CNY \(\+3 bands\)$",
        out,
        re.M,
    )
    code, out, _ = run_cli(capsys, "get", "games", "-o", "json", "--database-url", db_url)
    games = {g["game_id"]: g for g in json.loads(out)}
    assert (games["arena"]["version"], games["arena"]["image_size_bytes"]) == ("3", 42_000_000_000)
    for kind in ("hosts", "sessions"):
        code, out, _ = run_cli(capsys, "get", kind, "-o", "json", "--database-url", db_url)
        assert (code, json.loads(out)) == (0, [])

    async def audited() -> list[Any]:
        conn = await asyncpg.connect(db_url)
        try:
            return list(await conn.fetch("SELECT actor, tenant, action, target FROM audit_log ORDER BY seq"))
        finally:
            await conn.close()

    rows = asyncio.run(audited())
    actions = [r["action"] for r in rows]
    # The servicers' own audit actions, one per write, and a summary per apply.
    assert (
        actions.count("seat.put") == 8
        and actions.count("price.set") == 4
        and actions.count("host.enrol") == 2
    )
    assert actions.count("region.apply") == 2
    assert all(r["actor"].startswith("cli:") for r in rows)
    assert ("venue:pilot-cafe", "venue.create") in [(r["tenant"], r["action"]) for r in rows]


def test_a_change_in_the_file_is_applied_and_reported(
    db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_cli(capsys, "apply", "-f", str(REGION), "--database-url", db_url)[0] == 0
    edited = tmp_path / "region.yaml"
    text = (
        REGION.read_text()
        .replace("cap_ms: 10", "cap_ms: 12")
        .replace("playout: LOW_LATENCY ", "playout: SMOOTH ")
        .replace("name: Hangzhou Cloud Gaming", "name: HZ")
    )
    edited.write_text(text.replace("seats: [e-01, e-02]", "seats: [e-01, e-02, e-03]"))
    code, out, _ = run_cli(capsys, "apply", "-f", str(edited), "--database-url", db_url)
    assert code == 0
    assert re.search(
        r"^zone\s+pilot-cafe/esports\s+changed\s+cap_ms: 10 -> 12; playout: 'LOW_LATENCY' -> 'SMOOTH'$", out, re.M
    )
    assert re.search(r"^provider\s+hz-cloud\s+changed\s+name: 'Hangzhou Cloud Gaming' -> 'HZ'$", out, re.M)
    assert re.search(r"^seat\s+pilot-cafe/e-03\s+created$", out, re.M)
    assert out.rstrip().endswith("1 created, 2 changed, 25 unchanged, 1 deferred")
    assert zone_modes(db_url) == {"standard": "AUTO", "esports": "SMOOTH"}


def test_a_zone_without_playout_in_the_file_keeps_its_mode(
    db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run_cli(capsys, "apply", "-f", str(REGION), "--database-url", db_url)[0] == 0

    # The venue sets its standard zone's mode through the API (PutZone's store function, as the servicer calls it).
    async def put_smooth() -> None:
        pool = await database.create_pool(db_url, 1, 1)
        try:
            await venues.put_zone(pool, "pilot-cafe", "standard", "720P60", 30, "SMOOTH")
        finally:
            await pool.close()

    asyncio.run(put_smooth())
    # The file names no mode for the standard zone: applying it again is no change and leaves SMOOTH.
    code, out, _ = run_cli(capsys, "apply", "-f", str(REGION), "--database-url", db_url)
    assert code == 0
    assert re.search(r"^zone\s+pilot-cafe/standard\s+unchanged$", out, re.M)
    assert out.rstrip().endswith("0 created, 0 changed, 27 unchanged, 1 deferred")
    assert zone_modes(db_url) == {"standard": "SMOOTH", "esports": "LOW_LATENCY"}

    # Nor does a change of another field of that zone touch its mode.
    edited = tmp_path / "region.yaml"
    edited.write_text(REGION.read_text().replace("cap_ms: 30 ", "cap_ms: 25 "))
    code, out, _ = run_cli(capsys, "apply", "-f", str(edited), "--database-url", db_url)
    assert code == 0
    assert re.search(r"^zone\s+pilot-cafe/standard\s+changed\s+cap_ms: 30 -> 25$", out, re.M)
    assert zone_modes(db_url) == {"standard": "SMOOTH", "esports": "LOW_LATENCY"}


def test_a_bad_file_fails_whole_naming_the_path_and_writes_nothing(
    db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    before = counts(db_url)
    bad = tmp_path / "bad.yaml"
    bad.write_text(REGION.read_text().replace("cap_ms: 10", "cap_ms: 0"))
    code, out, err = run_cli(capsys, "apply", "-f", str(bad), "--database-url", db_url)
    assert (code, out) == (1, "")
    assert err.strip() == (
        "cloudseat-broker apply: venues[0].zones[1].cap_ms: must be at least 1 (nothing was written)"
    )
    assert counts(db_url) == before

    # A playout mode that is not one of the API's names: refused naming its place, and nothing written.
    bad.write_text(REGION.read_text().replace("playout: LOW_LATENCY ", "playout: low_latency "))
    code, out, err = run_cli(capsys, "apply", "-f", str(bad), "--database-url", db_url)
    assert (code, out) == (1, "")
    assert err.strip() == (
        "cloudseat-broker apply: venues[0].zones[1].playout: must be one of AUTO, LOW_LATENCY, SMOOTH "
        "(nothing was written)"
    )
    assert counts(db_url) == before

    # Refused by the database half way through (another provider enrolled an overlapping prefix): the providers,
    # sites and everything else written before it are undone too.
    async def rival() -> None:
        pool = await database.create_pool(db_url, 1, 1)
        try:
            await fleet.create_provider(pool, "rival", "Rival")
            await fleet.create_site(pool, "rival-site", "rival", "Rival site", "")
            await fleet.enrol_hosts(pool, "rival", "rival-site", "", [], "jd-rack")
        finally:
            await pool.close()

    asyncio.run(rival())
    before = counts(db_url)
    code, out, err = run_cli(capsys, "apply", "-f", str(REGION), "--database-url", db_url)
    assert code == 1
    assert err.strip() == (
        "cloudseat-broker apply: providers[0].sites[1].host_prefix: prefix 'jd-' overlaps the host ids another "
        "provider enrolled or runs (nothing was written)"
    )
    assert counts(db_url) == before


@pytest.fixture
def creds(tmp_path: Path) -> issuing.Credentials:
    return issuing.make(tmp_path / "creds", ["pilot-sh-01"])


@pytest.fixture
def broker_config(db_url: str, creds: issuing.Credentials) -> BrokerConfig:
    security = SecurityConfig(
        cert=creds.broker.cert, key=creds.broker.key, client_ca=creds.ca, token_key=creds.token_key
    )
    return dataclasses.replace(
        FAST, database_url=db_url, insecure=False, security=security, agent_listen="127.0.0.1:0"
    )


@pytest.mark.slow
async def test_the_example_agent_joins_the_applied_region_and_its_lease_is_made_then(
    broker: Broker, creds: issuing.Credentials, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = broker.config.database_url
    assert url is not None
    code, out, _ = await asyncio.to_thread(run_cli, capsys, "apply", "-f", str(REGION), "--database-url", url)
    assert code == 0 and "1 deferred" in out

    # The example config as a host would hold it: beside it its certificate, key and the region's CA.
    host = tmp_path / "pilot-host"
    (host / "credentials").mkdir(parents=True)
    agent_files = creds.agent("pilot-sh-01")
    for src, name in (
        (creds.ca, "ca.pem"),
        (agent_files.cert, "pilot-sh-01.pem"),
        (agent_files.key, "pilot-sh-01.key"),
    ):
        shutil.copy(src, host / "credentials" / name)
    text = (EXAMPLES / "agent.toml").read_text()
    config = host / "agent.toml"
    config.write_text(text.replace('broker = "127.0.0.1:50052"', f'broker = "127.0.0.1:{broker.agent_port}"'))
    from gpu_agent import config as agent_config

    loaded = agent_config.load(config)  # the agent's own loader
    assert (loaded.host_id, loaded.site_id, loaded.gpu_class) == ("pilot-sh-01", "sh-pudong", "rtx4090")

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gpu_agent", "run", "--config", str(config), "--log-format", "json",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        token = issuing.issue_token(creds.token_key, "provider", ttl_s=600, provider_id="sh-edge")
        async with BrokerClient(
            f"127.0.0.1:{broker.port}", token=token, credentials=tls.client_credentials(creds.ca)
        ) as provider:
            async with asyncio.timeout(60):
                while True:
                    hosts = (await provider.fleet.ListHosts(fleet_pb2.ListHostsRequest())).hosts
                    if any(
                        h.host_id == "pilot-sh-01" and h.status == fleet_pb2.HOST_STATUS_ONLINE for h in hosts
                    ):
                        break
                    assert proc.returncode is None, "the agent exited"
                    await asyncio.sleep(0.2)
        (online,) = hosts
        # The site's price for its class overrides what the agent declared (4.50 base; a band may be in force).
        assert online.site_id == "sh-pudong" and online.price_micros_per_slot_hour in (
            4_500_000, 6_800_000, 5_200_000, 2_400_000,
        )  # fmt: skip

        code, out, _ = await asyncio.to_thread(
            run_cli, capsys, "apply", "-f", str(REGION), "--database-url", url
        )
        assert code == 0
        assert re.search(r"^lease\s+pilot-cafe-evenings\s+created$", out, re.M)
        assert out.rstrip().endswith("1 created, 0 changed, 27 unchanged")
        code, out, _ = await asyncio.to_thread(
            run_cli, capsys, "apply", "-f", str(REGION), "--database-url", url
        )
        assert out.rstrip().endswith("0 created, 0 changed, 28 unchanged")
        code, out, _ = await asyncio.to_thread(run_cli, capsys, "get", "hosts", "--database-url", url)
        assert re.search(r"^pilot-sh-01\s+sh-edge\s+sh-pudong\s+rtx4090\s+online\s+2/2\s+0\s+no\s", out, re.M)

        # A seat of the applied venue plays on the applied host; `get` shows the live session.
        seat_token = issuing.issue_token(
            creds.token_key, "seat", ttl_s=600, venue_id="pilot-cafe", seat_id="a-01"
        )
        async with BrokerClient(
            f"127.0.0.1:{broker.port}", token=seat_token, credentials=tls.client_credentials(creds.ca)
        ) as seat:
            started = await seat.start_session("pilot-cafe", "a-01", "demo")
            sid = started.session.session_id
            placed = await seat.wait_for(sid, common_pb2.SESSION_STATE_READY, timeout_s=30)
            assert (placed.host_id, placed.site_id) == ("pilot-sh-01", "sh-pudong")
            code, out, _ = await asyncio.to_thread(run_cli, capsys, "get", "sessions", "--database-url", url)
            assert re.search(
                rf"^{sid}\s+pilot-cafe\s+a-01\s+demo\s+READY\s+pilot-sh-01\s+sh-pudong\s+4\s", out, re.M
            )
            code, out, _ = await asyncio.to_thread(run_cli, capsys, "get", "seats", "--database-url", url)
            assert re.search(
                r"^pilot-cafe\s+a-01\s+standard\s+720P60\s+30\s+AUTO\s+READY\s+pilot-sh-01\s+demo$", out, re.M
            )
            await seat.end_session(sid, started.session_token)
        code, out, _ = await asyncio.to_thread(run_cli, capsys, "get", "sessions", "--database-url", url)
        assert out.splitlines()[1:] == []  # live ones only
        code, out, _ = await asyncio.to_thread(
            run_cli, capsys, "get", "sessions", "--all", "-o", "json", "--database-url", url
        )
        (ended,) = json.loads(out)
        assert (ended["session_id"], ended["state"], ended["end_reason"]) == (sid, "ENDED", "ENDED_BY_PATRON")
        # A drain with a deadline shows when the host's sessions move.
        assert broker.pool is not None
        await fleet.set_drained(broker.pool, "pilot-sh-01", True, "fans", 1800)
        code, out, _ = await asyncio.to_thread(run_cli, capsys, "get", "hosts", "--database-url", url)
        assert re.search(r"^pilot-sh-01\s.*\syes, moves \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s", out, re.M), out
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
