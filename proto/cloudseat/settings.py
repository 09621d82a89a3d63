"""Flags, environment variables and defaults from one declaration: a program's frozen config dataclass.

A field that is a setting says so with `setting(default, "help")`; everything else is derived from the field:

    listen: str = setting("127.0.0.1:50051", "HOST:PORT for gRPC", env="CLOUDSEAT_BROKER_LISTEN")

gives `--listen` (the field's name, dashes for underscores, unless `flag=` says otherwise), falling back to the
environment variable (`env=`, else the prefix the program passes plus the name in capitals), falling back to the
default written once, here. The parser comes from the field's type (str, int, float, bool, Path, a tuple of one of
them for a repeatable flag, any of them `| None`), or `parse=`; `check=` says what a value must be. The help text
ends with the variable's name and the default, so `--help` documents both, and a bad value — on the command line or
in the environment — ends the program with one line that names the flag or the variable.

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, BrokerConfig, env_prefix="CLOUDSEAT_")
    args = parser.parse_args()
    config = settings.build(BrokerConfig, args, security=...)   # fields that are not settings passed in

Environment values are read when the flags are added, so `--help` shows what the environment says.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cloudseat import validate
from cloudseat.errors import InvalidArgument

_KEY = "cloudseat.setting"
T = TypeVar("T")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class SettingsError(ValueError):
    """A setting's value is wrong; the message names the flag or the environment variable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """A field's command-line face (see the module docstring)."""

    help: str
    flag: str | None = None
    env: str | tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    check: Callable[[Any], str | None] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    # Shown as the default in --help where the value itself is computed (a user's directory, the core count).
    shown: str | None = None
    # The flag must be given (on the command line or in the environment): the field has no sensible default.
    required: bool = False


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    flag: str | None = None,
    env: str | tuple[str, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    check: Callable[[Any], str | None] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    shown: str | None = None,
    required: bool = False,
) -> Any:
    """A dataclass field that is also a flag and an environment variable."""
    spec = Setting(
        help, flag, env, parse, check, tuple(choices) if choices else None, metavar, shown, required
    )
    meta = {_KEY: spec}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True, slots=True)
class _Bound:
    """A setting of one config class, resolved: its flag, variables, parser, default."""

    name: str
    spec: Setting
    flag: str
    envs: tuple[str, ...]
    parse: Callable[[str], Any]
    repeat: bool
    boolean: bool
    default: Any


def _fields(cls: type[Any], env_prefix: str) -> list[_Bound]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is None:
            continue
        kind = _unwrap(hints[f.name])
        repeat = typing.get_origin(kind) is tuple
        item = typing.get_args(kind)[0] if repeat else kind
        boolean = item is bool and not repeat
        parse = spec.parse or _parser(item, f"{cls.__name__}.{f.name}")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        envs = spec.env if isinstance(spec.env, tuple) else (spec.env or env_prefix + f.name.upper(),)
        flag = spec.flag or "--" + f.name.replace("_", "-")
        out.append(_Bound(f.name, spec, flag, envs, parse, repeat, boolean, default))
    return out


def _unwrap(kind: Any) -> Any:
    """The type inside `X | None`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def _parser(kind: Any, where: str) -> Callable[[str], Any]:
    parsers: dict[Any, Callable[[str], Any]] = {
        bool: _boolean,
        str: str,
        int: _integer,
        float: _number,
        Path: _path,
    }
    if kind not in parsers:
        raise TypeError(f"{where}: no parser for {kind!r}; give the setting parse=")
    return parsers[kind]


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{text!r} is not one of {', '.join(_TRUE + _FALSE[:-1])}")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _path(text: str) -> Path:
    if not text:
        raise ValueError("is empty; give a path")
    return Path(text)


class _Raw(str):
    """A value as typed on the command line, parsed (and its errors named after the flag) when the config is
    built, so that a bad value reads the same whether it came from a flag or from the environment."""


def negated(text: str) -> bool:
    """parse=: a switch whose variable is named for the opposite (`progress` read from CLOUDSEAT_…_NO_PROGRESS:
    1 turns it off). The flag itself is unchanged (`--progress` / `--no-progress`)."""
    return not _boolean(text)


def _shown(b: _Bound) -> str:
    if b.spec.shown is not None:
        return b.spec.shown
    if b.default is None or b.default == ():
        return "none"
    if b.boolean:
        return "on" if b.default else "off"
    if isinstance(b.default, tuple):
        return ",".join(map(str, b.default))
    return str(b.default)


def _problem(b: _Bound, value: Any) -> str | None:
    if b.spec.choices is not None and value is not None and value not in b.spec.choices:
        return f"must be one of {', '.join(b.spec.choices)}"
    if b.spec.check is not None and value is not None:
        return b.spec.check(value)
    return None


def _from_env(b: _Bound) -> tuple[bool, Any]:
    """(found, value) from the first of the setting's variables that is set; SettingsError naming it if bad."""
    for name in b.envs:
        raw = os.environ.get(name)
        if raw is None:
            continue
        try:
            if b.repeat:
                value: Any = tuple(b.parse(part.strip()) for part in raw.split(",") if part.strip())
            else:
                value = b.parse(raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{name}: {exc}") from None
        problem = _problem(b, value)
        if problem:
            raise SettingsError(f"{name}: {problem}")
        return True, value
    return False, None


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[Any],
    *,
    env_prefix: str = "CLOUDSEAT_",
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add a flag for every setting of `cls` (or just those named in `only`, less `skip`). `defaults` replaces
    declared defaults for this parser (a subcommand that serves on other ports). Raises SettingsError when an
    environment variable holds a bad value."""
    for b in _fields(cls, env_prefix):
        if (only is not None and b.name not in only) or b.name in skip:
            continue
        if defaults and b.name in defaults:
            b = dataclasses.replace(b, default=defaults[b.name], spec=dataclasses.replace(b.spec, shown=None))
        default = b.default
        found, value = _from_env(b)
        if not found:
            value = default
        envs = " or ".join(b.envs)
        tail = f"env {envs}" if b.spec.required else f"env {envs}; default {_shown(b)}"
        text = f"{b.spec.help} ({tail})" if b.spec.help else tail
        kwargs: dict[str, Any] = {"dest": b.name, "default": value, "help": text.replace("%", "%%")}
        if b.spec.metavar or not (b.boolean or b.spec.choices):  # argparse shows choices as {a,b}
            kwargs["metavar"] = b.spec.metavar or b.flag.lstrip("-").upper().replace("-", "_")
        if b.spec.required and not found:
            kwargs["required"] = True
        if b.spec.choices and not b.spec.metavar:
            kwargs["metavar"] = "{" + ",".join(b.spec.choices) + "}"
        if b.boolean:
            parser.add_argument(b.flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif b.repeat:
            parser.add_argument(b.flag, action=_Append, type=_Raw, **kwargs)
        else:
            parser.add_argument(b.flag, type=_Raw, **kwargs)


class _Append(argparse.Action):
    """A repeatable flag whose first use replaces the default (from the environment or the declaration)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        if not isinstance(current, list):  # the first use on the command line
            current = []
        current.append(values)
        setattr(namespace, self.dest, current)


def variables(cls: type[Any], *, env_prefix: str = "CLOUDSEAT_") -> list[str]:
    """Every environment variable the settings of `cls` read (deployment manifests are checked against them)."""
    return [name for b in _fields(cls, env_prefix) for name in b.envs]


def values(cls: type[Any], args: argparse.Namespace, *, env_prefix: str = "CLOUDSEAT_") -> dict[str, Any]:
    """The settings of `cls` found on `args`, checked; SettingsError naming the flag of the first bad one."""
    out = {}
    for b in _fields(cls, env_prefix):
        if not hasattr(args, b.name):
            continue
        value = getattr(args, b.name)
        try:
            if b.repeat and isinstance(value, list):
                value = tuple(b.parse(v) if isinstance(v, _Raw) else v for v in value)
            elif isinstance(value, _Raw):
                value = b.parse(str(value))
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{b.flag}: {exc}") from None
        problem = _problem(b, value)
        if problem:
            raise SettingsError(f"{b.flag}: {problem}")
        out[b.name] = value
    return out


def build(cls: type[T], args: argparse.Namespace, *, env_prefix: str = "CLOUDSEAT_", **others: Any) -> T:
    """An instance of `cls` from the parsed settings, plus `others` (fields that are not settings, or values the
    program worked out). A ValueError from the class's own checks (__post_init__) comes back as SettingsError."""
    try:
        return cls(**{**values(cls, args, env_prefix=env_prefix), **others})
    except SettingsError:
        raise
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def at_least(low: float) -> Callable[[Any], str | None]:
    """check=: a number no smaller than `low`."""
    return lambda v: None if v >= low else f"must be at least {low:g}"


def above(low: float) -> Callable[[Any], str | None]:
    """check=: a number larger than `low`."""
    return lambda v: None if v > low else f"must be more than {low:g}"


def host_port(value: str) -> str | None:
    """check=: HOST:PORT (an IPv6 host in brackets; port 0: any free port)."""
    try:
        validate.host_port(value, "address")
    except InvalidArgument as exc:
        return exc.message.removeprefix("address: ")
    return None


def none_if_off(text: str) -> str | None:
    """parse=: a value, or None for 'off' (or nothing): an optional listener."""
    return None if text.strip() in ("", "off") else text
