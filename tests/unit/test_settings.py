"""cloudseat.settings: one declaration gives the flag, the environment variable and the default."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
from cloudseat import settings
from cloudseat.settings import SettingsError, at_least, setting


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    listen: str = setting("127.0.0.1:1", "where to listen")
    grace_s: float = setting(10.0, "seconds of grace", flag="--grace", check=at_least(0))
    verbose: bool = setting(False, "say more")
    peers: tuple[Path, ...] = setting((), "a peer (repeat)", flag="--peer", env="EX_PEERS")
    mode: str = setting("fast", "how", choices=("fast", "slow"))
    url: str | None = setting(None, "a URL", env=("EX_URL", "FALLBACK_URL"))
    not_a_flag: int = 3


def _parse(argv: list[str], **defaults: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Example, env_prefix="EX_", defaults=defaults)
    return parser.parse_args(argv)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EX_LISTEN", "EX_GRACE_S", "EX_VERBOSE", "EX_PEERS", "EX_MODE", "EX_URL", "FALLBACK_URL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_come_from_the_declaration() -> None:
    cfg = settings.build(Example, _parse([]))
    assert cfg == Example()


def test_flags_are_derived_from_field_names_unless_named() -> None:
    cfg = settings.build(
        Example, _parse(["--listen", "h:2", "--grace", "1.5", "--verbose", "--mode", "slow", "--url", "u"])
    )
    assert (cfg.listen, cfg.grace_s, cfg.verbose, cfg.mode, cfg.url) == ("h:2", 1.5, True, "slow", "u")


def test_the_environment_fills_in_and_the_command_line_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EX_LISTEN", "env:3")
    monkeypatch.setenv("EX_GRACE_S", "2")
    monkeypatch.setenv("EX_VERBOSE", "yes")
    monkeypatch.setenv("FALLBACK_URL", "from-fallback")
    cfg = settings.build(Example, _parse([]))
    assert (cfg.listen, cfg.grace_s, cfg.verbose, cfg.url) == ("env:3", 2.0, True, "from-fallback")
    assert settings.build(Example, _parse(["--listen", "cli:4", "--no-verbose"])).listen == "cli:4"
    assert settings.build(Example, _parse(["--no-verbose"])).verbose is False
    monkeypatch.setenv("EX_URL", "first")
    assert settings.build(Example, _parse([])).url == "first"


def test_a_repeated_flag_replaces_the_environments_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EX_PEERS", "/a, /b")
    assert settings.build(Example, _parse([])).peers == (Path("/a"), Path("/b"))
    assert settings.build(Example, _parse(["--peer", "/c", "--peer", "/d"])).peers == (Path("/c"), Path("/d"))


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EX_GRACE_S", "soon")
    with pytest.raises(SettingsError, match=r"^EX_GRACE_S: 'soon' is not a number$"):
        _parse([])
    monkeypatch.setenv("EX_GRACE_S", "-1")
    with pytest.raises(SettingsError, match=r"^EX_GRACE_S: must be at least 0$"):
        _parse([])
    monkeypatch.setenv("EX_GRACE_S", "1")
    monkeypatch.setenv("EX_MODE", "sideways")
    with pytest.raises(SettingsError, match="must be one of fast, slow"):
        _parse([])


def test_a_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(SettingsError, match=r"^--grace: must be at least 0$"):
        settings.build(Example, _parse(["--grace", "-2"]))
    with pytest.raises(SettingsError, match=r"^--grace: 'later' is not a number$"):
        settings.build(Example, _parse(["--grace", "later"]))
    with pytest.raises(SettingsError, match=r"^--mode: must be one of fast, slow$"):
        settings.build(Example, _parse(["--mode", "sideways"]))


def test_help_names_the_variable_and_the_default() -> None:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Example, env_prefix="EX_")
    text = parser.format_help()
    assert "(env EX_GRACE_S; default 10.0)" in text
    assert "(env EX_URL or FALLBACK_URL; default none)" in text
    assert "--mode {fast,slow}" in text
    assert "not-a-flag" not in text


def test_a_program_may_change_a_default_for_one_subcommand() -> None:
    assert settings.build(Example, _parse([], listen="other:9")).listen == "other:9"


def test_only_and_skip_choose_the_settings() -> None:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Example, env_prefix="EX_", only=("listen", "mode"), skip=("mode",))
    args = parser.parse_args([])
    assert vars(args) == {"listen": "127.0.0.1:1"}


def test_required_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class Needs:
        venue: str = setting(None, "the venue", required=True)

    parser = argparse.ArgumentParser(exit_on_error=False)
    settings.add_arguments(parser, Needs, env_prefix="EX_")
    with pytest.raises(SystemExit):
        parser.parse_args([])
    monkeypatch.setenv("EX_VENUE", "cafe")
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Needs, env_prefix="EX_")
    assert settings.build(Needs, parser.parse_args([])).venue == "cafe"


def test_variables_lists_every_name_read() -> None:
    assert settings.variables(Example, env_prefix="EX_") == [
        "EX_LISTEN",
        "EX_GRACE_S",
        "EX_VERBOSE",
        "EX_PEERS",
        "EX_MODE",
        "EX_URL",
        "FALLBACK_URL",
    ]


def test_a_switch_may_read_a_variable_named_for_the_opposite(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class Bar:
        progress: bool = setting(True, "a progress bar", env="EX_NO_PROGRESS", parse=settings.negated)

    def parse(argv: list[str]) -> bool:
        parser = argparse.ArgumentParser()
        settings.add_arguments(parser, Bar, env_prefix="EX_")
        return bool(settings.build(Bar, parser.parse_args(argv)).progress)

    monkeypatch.delenv("EX_NO_PROGRESS", raising=False)
    assert parse([]) is True and parse(["--no-progress"]) is False
    monkeypatch.setenv("EX_NO_PROGRESS", "1")
    assert parse([]) is False and parse(["--progress"]) is True
    monkeypatch.setenv("EX_NO_PROGRESS", "0")
    assert parse([]) is True
    monkeypatch.setenv("EX_NO_PROGRESS", "maybe")
    with pytest.raises(SettingsError, match=r"^EX_NO_PROGRESS: 'maybe' is not one of 1, true"):
        parse([])
