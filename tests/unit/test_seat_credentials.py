"""A seat's credentials and what it is told when they, or the way to its broker, are wrong: token files
(`cloudseat-broker token` writes them, the seat clients read them), the flags a token needs, the token's seat against
the seat's flags, and gRPC's UNAVAILABLE texts put in words that name the flag to fix (thin_client.reach)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cloudseat.errors import InvalidArgument
from cloudseat.settings import SettingsError

from broker import auth, issuing
from thin_client import reach
from thin_client.seat import SeatConfig, load_credentials, read_token_file, token_claims, token_mismatch

CFG = SeatConfig(broker="broker.example:50051", venue_id="cafe", seat_id="s1")
TLS_CFG = SeatConfig(broker="broker.example:50051", venue_id="cafe", seat_id="s1", ca=Path("/etc/ca.pem"))

# gRPC's texts, recorded from grpcio 1.80 against a real broker (plaintext and TLS) on 127.0.0.1.
PLAINTEXT_TO_TLS = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:46045: Socket closed"
UNTRUSTED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:34895: Tls handshake failed "
    "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1a000064:ECDSA routines:OPENSSL_internal:BAD_SIGNATURE: "
    "certificate signature failure: OK"
)
NO_NAME = (
    "errors resolving no..such:50051: [field:hostname lookup error:address lookup failed for no..such:50051: "
    "Misformatted domain name]"
)
OTHER_NAME = (  # the broker's certificate names broker.example only; the seat asked for 127.0.0.1
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:40215: Custom verification check "
    "failed with error: UNAUTHENTICATED: Hostname Verification Check failed."
)
REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: Failed to connect to remote host: "
    "Connection refused"
)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "token-key.pem"
    auth.write_signing_key(auth.new_signing_key(), path)
    return path


def test_unavailable_texts_are_told_apart() -> None:
    assert reach.cause_of(NO_NAME, tls=False) is reach.Cause.NAME
    assert reach.cause_of(REFUSED, tls=True) is reach.Cause.REFUSED
    assert reach.cause_of(UNTRUSTED, tls=True) is reach.Cause.TLS_UNTRUSTED
    # A closed connection alone does not tell: the probe of the address does.
    assert reach.needs_probe(PLAINTEXT_TO_TLS, tls=False)
    assert reach.cause_of(PLAINTEXT_TO_TLS, tls=False) is reach.Cause.CLOSED
    assert reach.cause_of(PLAINTEXT_TO_TLS, tls=False, speaks_tls=True) is reach.Cause.TLS_WANTED
    assert reach.cause_of(PLAINTEXT_TO_TLS, tls=True, speaks_tls=False) is reach.Cause.TLS_NOT_SPOKEN
    assert reach.cause_of(PLAINTEXT_TO_TLS, tls=False, speaks_tls=False) is reach.Cause.CLOSED
    assert reach.cause_of(OTHER_NAME, tls=True) is reach.Cause.TLS_NAME
    assert not reach.needs_probe(UNTRUSTED, tls=True)


def test_each_cause_names_the_flag_that_fixes_it() -> None:
    said = {cause: reach.sentence(cause, TLS_CFG if cause.name.startswith("TLS_U") else CFG) for cause in reach.Cause}
    assert said[reach.Cause.NAME].startswith("cannot resolve the broker's host name 'broker.example' (--broker ")
    wanted = said[reach.Cause.TLS_WANTED]
    assert wanted.startswith("TLS: ") and "--ca FILE (CLOUDSEAT_CA)" in wanted
    assert said[reach.Cause.TLS_UNTRUSTED] == (
        "TLS: the broker's certificate at broker.example:50051 is not signed by the CA in --ca /etc/ca.pem: give the "
        "CA bundle that signed the broker's certificate with --ca FILE"
    )
    assert "leave out --ca" in said[reach.Cause.TLS_NOT_SPOKEN]
    assert "--broker" in said[reach.Cause.TLS_NAME]
    for cause, text in said.items():
        assert "\n" not in text and "grpc" not in text.lower(), cause
        assert cause not in reach.SETUP_MISTAKES or "--" in text, cause
    assert reach.host_of("[::1]:50051") == "::1"


def test_a_token_file_is_read_and_its_mistakes_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "s1.token"
    good.write_text("header.payload.sig\nignored second line\n")
    good.chmod(0o600)
    assert read_token_file(good) == ("header.payload.sig", None)
    good.chmod(0o644)
    token, warning = read_token_file(good)
    assert token == "header.payload.sig"
    assert warning == (
        f"--token-file {str(good)!r} can be read by its group and every user (mode 0644); a seat token is a "
        f"secret: chmod 600 {good}"
    )
    empty = tmp_path / "empty.token"
    empty.write_text("\n  \n")
    for path, problem in [
        (tmp_path / "missing.token", "no such file"),
        (empty, "is empty (its first line should be the seat's token)"),
        (tmp_path, "is a folder, not a token file"),
    ]:
        with pytest.raises(SettingsError) as refused:
            read_token_file(path)
        assert str(refused.value).startswith(f"--token-file {str(path)!r}: {problem}"), refused.value
    binary = tmp_path / "binary.token"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SettingsError, match="is not text"):
        read_token_file(binary)


def test_the_seat_flags_are_checked_against_the_token(key: Path, tmp_path: Path) -> None:
    token = issuing.issue_token(key, "seat", ttl_s=60, venue_id="cafe", seat_id="s2")
    path = tmp_path / "s2.token"
    issuing.write_secret(path, token + "\n")
    assert token_claims(token) is not None and token_claims("not-a-token") is None
    warnings: list[str] = []
    own = load_credentials(SeatConfig(venue_id="cafe", seat_id="s2", token_file=path), warnings.append)
    assert own.token == token and warnings == []
    with pytest.raises(SettingsError) as other_seat:
        load_credentials(SeatConfig(venue_id="cafe", seat_id="s1", token_file=path), warnings.append)
    assert str(other_seat.value) == (
        f"--seat 's1' is not the seat of this seat's token (--token-file {path} is for seat 's2' of venue 'cafe'): "
        "check --seat, or give the token of this seat"
    )
    assert token_mismatch(SeatConfig(venue_id="x", seat_id="s2", token=token)) == (
        "--venue 'x' is not the venue of this seat's token (--token is for seat 's2' of venue 'cafe'): check "
        "--venue, or give the token of this seat"
    )
    with pytest.raises(SettingsError, match="both set: give one"):
        load_credentials(SeatConfig(venue_id="cafe", seat_id="s2", token="t", token_file=path), warnings.append)
    venue_token = issuing.issue_token(key, "venue", ttl_s=60, venue_id="cafe")
    assert token_mismatch(SeatConfig(venue_id="cafe", seat_id="any", token=venue_token)) is None


def test_token_flags_are_named_as_typed() -> None:
    with pytest.raises(InvalidArgument) as refused:
        issuing.check_claim_flags("seat", {"--venue": "cafe", "--seat": "", "--provider": ""})
    assert refused.value.message == "--role: a seat token needs --seat"
    with pytest.raises(InvalidArgument) as refused:
        issuing.check_claim_flags("seat", {"--venue": "", "--seat": "", "--provider": ""})
    assert refused.value.message == "--role: a seat token needs --venue and --seat"
    with pytest.raises(InvalidArgument) as refused:
        issuing.check_claim_flags("venue", {"--venue": "cafe", "--seat": "s1", "--provider": ""})
    assert refused.value.message == "--seat: a venue token carries no seat; leave it out"
    issuing.check_claim_flags("operator", {"--venue": "", "--seat": "", "--provider": ""})


def test_seat_token_files_are_private_whole_and_named_safely(key: Path, tmp_path: Path) -> None:
    out = tmp_path / "seats"
    written = issuing.write_seat_tokens(key, "cafe", ["s1", "s2"], out, ttl_s=60)
    assert [w.path.name for w in written] == ["s1.token", "s2.token"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    verifier = auth.TokenVerifier([auth.load_public_key(auth.public_path(key))])
    for w in written:
        assert stat.S_IMODE(w.path.stat().st_mode) == 0o600
        principal = verifier.verify(w.path.read_text().removesuffix("\n"))
        assert (principal.role, principal.venue_id, principal.seat_id) == (auth.Role.SEAT, "cafe", w.seat_id)
    assert sorted(os.listdir(out)) == ["s1.token", "s2.token"]  # no temporary file left behind
    # A name that is no safe file name is refused before anything is written.
    for bad in ("s:3", "a/b", ".hidden", "..", "x" * 65):
        with pytest.raises(InvalidArgument) as refused:
            issuing.write_seat_tokens(key, "cafe", ["s9", bad], tmp_path / "bad", ttl_s=60)
        assert f"seat {bad!r} of venue 'cafe' is not a safe file name" in refused.value.message
        assert refused.value.message.endswith("no file was written")
        assert not (tmp_path / "bad").exists()
    with pytest.raises(InvalidArgument, match="venue 'cafe' has no seats yet"):
        issuing.write_seat_tokens(key, "cafe", [], tmp_path / "none", ttl_s=60)


def test_a_secret_replaces_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "op.token"
    issuing.write_secret(path, "first\n")
    path.chmod(0o644)  # someone loosened it; a rewrite makes it private again
    issuing.write_secret(path, "second\n")
    assert path.read_text() == "second\n" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["op.token"]


def test_token_command_names_the_flag_of_a_bad_key_or_lifetime(
    key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker import cli

    missing = tmp_path / "none.pem"
    assert cli.main(["token", "--key", str(missing), "--role", "operator"]) == 2
    assert capsys.readouterr().err.startswith(f"cloudseat-broker token: --key: no file {str(missing)!r}")
    assert cli.main(["token", "--key", str(key), "--role", "operator", "--ttl", "soon"]) == 2
    assert capsys.readouterr().err == (
        "cloudseat-broker token: --ttl: 'soon' is not a lifetime like 3600, 15m, 12h or 30d\n"
    )
    assert cli.main(["token", "--key", str(key), "--role", "seat", "--venue", "cafe", "--seat", "s1",
                     "--out-dir", str(tmp_path / "d")]) == 2  # fmt: skip
    assert "--out-dir: only with --all-seats" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
