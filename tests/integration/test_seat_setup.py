"""A seat set up as a venue's technician would: token files from `cloudseat-broker token --all-seats`, the seat
clients reading them, and every setup mistake answered with what to fix, against a real broker on 127.0.0.1 (real
TLS where the mistake is about TLS), with the real programs as their own processes.

- `cloudseat-broker token --all-seats` writes one private file per seat the database holds, and refuses an unknown
  venue, a venue without seats and a seat id that is no safe file name, writing nothing.
- `cloudseat-client play` without --ca, with a CA that did not sign the broker, with --ca to a plaintext broker,
  with a host name that does not resolve, with a token whose venue the broker does not have, with a token file
  readable by others: one line each, naming the flag; play and the kiosk with a token file that is missing or is
  another seat's stop before they reach for the broker.
- The broker going away while seats wait in the queue: the Python client and the kiosk page say the broker cannot
  be reached and that the seat retries, keeping its place; when the broker is back, the same sessions are queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cloudseat import tls
from cloudseat.client import BrokerClient
from cloudseat.v1 import common_pb2, fleet_pb2, session_pb2, venue_pb2

from broker import auth, issuing
from broker.config import BrokerConfig, SecurityConfig
from broker.server import Broker
from tests.integration import browser as b
from tests.integration.conftest import FAST

pytestmark = pytest.mark.slow
S = common_pb2.SessionState


async def _run(*args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    """A program of this repository (`python -m broker` or `python -m thin_client`) to its end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_token_all_seats_writes_a_private_file_per_seat(
    world: BrokerClient, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker import cli

    creds = issuing.make(tmp_path / "creds", [])
    await world.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="empty", name="No seats yet"))
    token = ["token", "--key", str(creds.token_key), "--database-url", db_url, "--role", "seat"]

    async def run(*args: str) -> tuple[int, str, str]:
        # `cloudseat-broker token` itself, in a thread of its own (it runs its own event loop for the database);
        # what the broker logged before is left out (it answers no call meanwhile: the command reads the database).
        capsys.readouterr()
        code = await asyncio.to_thread(cli.main, [*token, *args])
        out, err = capsys.readouterr()
        return code, out, err

    seats = tmp_path / "seats"
    code, out, err = await run("--venue", "cafe", "--all-seats", "--out-dir", str(seats), "--ttl", "12h")
    assert code == 0, err
    assert out.splitlines() == [f"s{i}\t{seats / f's{i}.token'}" for i in range(1, 5)]
    verifier = auth.TokenVerifier([auth.load_public_key(auth.public_path(creds.token_key))])
    assert stat.S_IMODE(seats.stat().st_mode) == 0o700
    for i in range(1, 5):
        path = seats / f"s{i}.token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        principal = verifier.verify(path.read_text().removesuffix("\n"))
        assert (principal.role, principal.venue_id, principal.seat_id) == (auth.Role.SEAT, "cafe", f"s{i}")
    assert sorted(os.listdir(seats)) == [f"s{i}.token" for i in range(1, 5)]

    assert await run("--venue", "nope", "--all-seats", "--out-dir", str(tmp_path / "nope")) == (
        2, "", "cloudseat-broker token: --venue: no venue 'nope' in the database\n"
    )
    code, _, err = await run("--venue", "empty", "--all-seats", "--out-dir", str(tmp_path / "empty"))
    assert code == 2 and "venue 'empty' has no seats yet: add them first" in err
    assert await run("--venue", "cafe") == (2, "", "cloudseat-broker token: --role: a seat token needs --seat\n")
    assert not (tmp_path / "nope").exists() and not (tmp_path / "empty").exists()
    # A seat id the broker takes but that is no safe file name (':'): refused, and no file at all is written.
    await world.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id="cafe", seat_id="s:5", zone_id="std"))
    code, _, err = await run("--venue", "cafe", "--all-seats", "--out-dir", str(tmp_path / "again"))
    assert code == 2 and "seat 's:5' of venue 'cafe' is not a safe file name" in err and err.count("\n") == 1
    assert not (tmp_path / "again").exists()
    # One seat's token to a file of its own.
    code, out, _ = await run("--venue", "cafe", "--seat", "s1", "--out", str(tmp_path / "one" / "s1.token"))
    assert code == 0 and out == f"wrote {tmp_path / 'one' / 's1.token'}\n"
    assert verifier.verify((tmp_path / "one" / "s1.token").read_text().strip()).seat_id == "s1"


# -- a broker with TLS and tenant tokens ---------------------------------------------------------------------------


@pytest.fixture
def creds(tmp_path: Path) -> issuing.Credentials:
    return issuing.make(tmp_path / "creds", [])


@pytest.fixture
async def secured(db_url: str, creds: issuing.Credentials) -> AsyncIterator[Broker]:
    security = SecurityConfig(
        cert=creds.broker.cert, key=creds.broker.key, client_ca=creds.ca, token_key=creds.token_key
    )
    config = dataclasses.replace(
        FAST, database_url=db_url, insecure=False, security=security, agent_listen="127.0.0.1:0"
    )
    broker = Broker(config)
    await broker.start()
    try:
        operator = issuing.issue_token(creds.token_key, "operator", ttl_s=600)
        async with BrokerClient(
            f"127.0.0.1:{broker.port}", token=operator, credentials=tls.client_credentials(creds.ca)
        ) as op:
            await op.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
            await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id="cafe", name="Cafe"))
            await op.venues.PutZone(
                venue_pb2.PutZoneRequest(
                    venue_id="cafe", zone_id="std", tier=common_pb2.TIER_720P60, latency_cap_ms=30
                )
            )
            await op.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id="cafe", seat_id="s1", zone_id="std"))
        yield broker
    finally:
        await broker.stop(grace_s=1.0)


def _token_file(creds: issuing.Credentials, path: Path, venue: str, seat: str, mode: int = 0o600) -> Path:
    token = issuing.issue_token(creds.token_key, "seat", ttl_s=600, venue_id=venue, seat_id=seat)
    issuing.write_secret(path, token + "\n")
    path.chmod(mode)
    return path


async def test_play_says_what_to_fix_in_the_seat_setup(
    secured: Broker, creds: issuing.Credentials, tmp_path: Path
) -> None:
    at = f"127.0.0.1:{secured.port}"
    s1 = _token_file(creds, tmp_path / "s1.token", "cafe", "s1")
    ghost = _token_file(creds, tmp_path / "ghost.token", "nowhere", "s1", mode=0o644)
    stranger = issuing.make(tmp_path / "elsewhere", [])  # a CA that did not sign this broker's certificate

    def play(*args: str, broker: str = at) -> tuple[str, ...]:
        return ("-m", "thin_client", "play", "--broker", broker, "--game", "demo", "--headless", "--duration",
                "1", *args)  # fmt: skip

    seat = ("--venue", "cafe", "--seat", "s1")
    results = await asyncio.gather(
        _run(*play(*seat, "--token-file", str(s1))),  # no --ca: plaintext to a TLS broker
        _run(*play(*seat, "--token-file", str(s1), "--ca", str(stranger.ca))),
        _run(*play(*seat, "--token-file", str(s1), "--ca", str(creds.ca), broker="no..such:50051")),
        _run(*play("--venue", "nowhere", "--seat", "s1", "--token-file", str(ghost), "--ca", str(creds.ca))),
    )
    for code, _, err in results:
        assert code == 2 and "Traceback" not in err, err
    no_ca, untrusted, no_name, no_venue = (err for _, _, err in results)
    assert no_ca == (
        f"cloudseat-client: TLS: the broker at {at} speaks TLS and this seat connects without it: give the CA "
        "bundle that signed the broker's certificate with --ca FILE (CLOUDSEAT_CA)\n"
    )
    assert untrusted == (
        f"cloudseat-client: TLS: the broker's certificate at {at} is not signed by the CA in --ca {stranger.ca}: "
        "give the CA bundle that signed the broker's certificate with --ca FILE\n"
    )
    # 'no..such' is decided on this machine (a malformed name): no query leaves it.
    assert no_name == (
        "cloudseat-client: cannot resolve the broker's host name 'no..such' (--broker no..such:50051): check the "
        "name, or give the broker's address as --broker HOST:PORT (CLOUDSEAT_BROKER)\n"
    )
    # The token's own venue is not in the broker's database: said as what was not found, not as credentials.
    assert no_venue.splitlines() == [
        f"cloudseat-client play: warning: --token-file {str(ghost)!r} can be read by its group and every user "
        f"(mode 0644); a seat token is a secret: chmod 600 {ghost}",
        "cloudseat-client: venue_id: no venue 'nowhere'; check --venue",
    ]


def test_both_seat_clients_check_the_token_file_before_they_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token file that is missing, or for another seat, stops `play` and the kiosk before they reach for the
    broker (nothing listens at its address here), with one line naming the flag."""
    from thin_client import cli

    creds = issuing.make(tmp_path / "creds", [])
    s1 = _token_file(creds, tmp_path / "s1.token", "cafe", "s1")
    missing = tmp_path / "missing.token"
    for command, extra in (("play", ["--game", "demo", "--headless"]), ("kiosk", ["--listen", "127.0.0.1:0"])):
        base = [command, "--broker", "127.0.0.1:9", "--ca", str(creds.ca), *extra]
        for args, line in [
            (["--venue", "cafe", "--seat", "s2", "--token-file", str(s1)],
             f"--seat 's2' is not the seat of this seat's token (--token-file {s1} is for seat 's1' of venue "
             "'cafe'): check --seat, or give the token of this seat"),
            (["--venue", "cafe", "--seat", "s1", "--token-file", str(missing)],
             f"--token-file {str(missing)!r}: no such file (`cloudseat-broker token ... --out FILE` writes one)"),
            (["--venue", "cafe", "--seat", "s1", "--token-file", str(s1), "--token", "t"],
             "--token (CLOUDSEAT_TOKEN) and --token-file (CLOUDSEAT_TOKEN_FILE) are both set: give one"),
        ]:  # fmt: skip
            assert cli.main([*base, *args]) == 2
            assert capsys.readouterr().err == f"cloudseat-client {command}: error: {line}\n", (command, args)


# -- the broker lost while seats wait in the queue ----------------------------------------------------------------


async def _line_with(stream: asyncio.StreamReader, text: str, seen: list[str], timeout_s: float = 30) -> str:
    async with asyncio.timeout(timeout_s):
        while True:
            line = (await stream.readline()).decode()
            assert line, f"the client ended before saying {text!r}: {seen}"
            seen.append(line.rstrip("\n"))
            if text in line:
                return line.rstrip("\n")


async def _page_says(page: object, text: str, timeout_s: float = 30) -> str:
    async with asyncio.timeout(timeout_s):
        while True:
            message = await page.evaluate("cloudseat.message")  # type: ignore[attr-defined]
            if text in message:
                return str(message)
            await asyncio.sleep(0.1)


async def test_a_broker_lost_during_the_queue_is_said_and_the_place_kept(
    broker_config: BrokerConfig, creds: issuing.Credentials, tmp_path: Path
) -> None:
    first = Broker(broker_config)
    await first.start()
    at = f"127.0.0.1:{first.port}"
    async with BrokerClient(at) as op:
        await op.fleet.PutGame(fleet_pb2.PutGameRequest(game_id="demo", name="Demo"))
        await op.venues.CreateVenue(venue_pb2.CreateVenueRequest(venue_id=b.VENUE, name="Cafe"))
        await b.kiosk_seat(op)  # k1, for the page
        await op.venues.PutSeat(venue_pb2.PutSeatRequest(venue_id=b.VENUE, seat_id="s1", zone_id=b.ZONE))
    # No host at all: both seats wait in the queue.
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "thin_client", "play", "--broker", at, "--venue", b.VENUE, "--seat", "s1",
        "--game", "demo", "--headless",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    second: Broker | None = None
    said: list[str] = []
    try:
        assert client.stdout is not None
        async with b.kiosk(at) as kiosk, b.chromium() as chromium:
            page = await b.seat_page(chromium, kiosk.url)
            await page.goto(kiosk.url)
            await b.wait_state(page, ["idle"], 20)
            queued = await page.evaluate("(game) => cloudseat.start(game)", "demo")
            await b.wait_state(page, ["queued"], 20)
            await _line_with(client.stdout, "in the queue", said)
            session_line = next(line for line in said if line.startswith("session "))
            await first.stop(grace_s=0.5)

            lost = f"cannot reach the broker at {at}; retrying; your place in the queue is kept"
            assert await _line_with(client.stdout, "cannot reach the broker", said) == lost
            assert await _page_says(page, "cannot reach the broker") == lost
            assert await page.evaluate("cloudseat.state") == "queued"
            assert await page.evaluate("cloudseat.session.broker_reachable") is False

            second = Broker(dataclasses.replace(broker_config, listen=at))  # the same address, the same database
            await second.start()
            # The client's next queue line (it may say it cannot reach the broker again first: that line speaks of
            # the queue too).
            async with asyncio.timeout(30):
                while not (await _line_with(client.stdout, "in the queue", said)).startswith("in the queue"):
                    pass
            # Back in touch: the page's line is the queue's again (the lost line speaks of the queue too, so wait
            # for the line that starts with it, and for the session to say the broker is reachable).
            await page.wait_for_function(
                """() => cloudseat.message.startsWith('in the queue')
                         && cloudseat.session.broker_reachable === true""",
                timeout=30_000,
            )
            async with BrokerClient(at) as op:
                for sid in (session_line.split()[1], queued["session_id"]):
                    got = await op.sessions.GetSession(session_pb2.GetSessionRequest(session_id=sid))
                    assert got.session.state == S.SESSION_STATE_PENDING, sid
            # --ca to this plaintext broker: said as TLS the broker does not speak.
            code, _, err = await _run(
                "-m", "thin_client", "play", "--broker", at, "--venue", b.VENUE, "--seat", "s1", "--game", "demo",
                "--headless", "--ca", str(creds.ca),
            )  # fmt: skip
            assert code == 2 and err == (
                f"cloudseat-client: TLS: the broker at {at} does not speak TLS (a broker running --insecure?): "
                "leave out --ca (and CLOUDSEAT_CA), or point --broker at the broker's TLS address\n"
            )
    finally:
        if client.returncode is None:
            client.terminate()
            await asyncio.wait_for(client.wait(), 30)
        if second is not None:
            await second.stop(grace_s=0.5)
        else:
            await first.stop(grace_s=0.5)
