"""The programs stand side by side on one shared layer, and each installs only what it runs.

    cloudseat (proto/cloudseat)   the contract, the typed client, errors, validation, TLS, logging, settings, the
        ▲     ▲     ▲             seat wire format, ICE, the HTTP plumbing; depends on none of the programs
     broker  gpu_agent  thin_client
                  ▲
              loadtest            (the harness: it may use all three)

Checked two ways: statically, every import of every module (lazy ones inside functions too: they run on some path)
against the layer rule and against the program's extra in pyproject.toml; and at run time, a fresh interpreter that
imports every module of a program holds none of the others' heavy dependencies afterwards.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = "cloudseat"
# Program package -> its extra in pyproject.toml.
PROGRAMS = {"broker": "broker", "gpu_agent": "agent", "thin_client": "seat", "loadtest": "loadtest"}
# What each program may import of the others (besides the shared layer).
MAY_USE = {
    "broker": set(),
    "gpu_agent": set(),
    "thin_client": set(),
    "loadtest": {"broker", "gpu_agent", "thin_client"},
}
# Import names whose distribution has another name and is not installed as such in every environment.
_DIST_OF = {"google": "protobuf", "jwt": "pyjwt", "pygame": "pygame-ce", "pynvml": "nvidia-ml-py"}


def _package_dir(package: str) -> Path:
    return ROOT / "proto" / SHARED if package == SHARED else ROOT / package


def _modules(package: str) -> dict[str, Path]:
    """Every module of `package` (generated contract code left out: it imports only grpc and protobuf)."""
    base = _package_dir(package)
    out = {}
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base.parent).with_suffix("")
        if "_pb2" in path.name:
            continue
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Absolute names of everything `module` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names.add(base)
            # `from pkg import module` imports pkg.module when it is one.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


_ALL = {pkg: _modules(pkg) for pkg in (SHARED, *PROGRAMS)}
_KNOWN = {name: path for modules in _ALL.values() for name, path in modules.items()}


def _closure(package: str) -> tuple[set[str], set[str]]:
    """(our modules, third-party top-level names) reached from every module of `package`."""
    seen: set[str] = set()
    third: set[str] = set()
    todo = list(_ALL[package])
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for name in _imports(module, _KNOWN[module]):
            top = name.split(".")[0]
            if top in (SHARED, *PROGRAMS):
                if name in _KNOWN:
                    todo.append(name)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return seen, third


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> tuple[set[str], dict[str, set[str]]]:
    """The base dependencies' names and each extra's (other extras it names expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> tuple[set[str], set[str]]:
        plain, extras = set(), set()
        for req in reqs:
            m = re.match(r"([A-Za-z0-9._-]+)(\[([^\]]*)\])?", req)
            assert m is not None, req
            if _normal(m[1]) == "cloudseat":
                extras.update(e.strip() for e in (m[3] or "").split(","))
            else:
                plain.add(_normal(m[1]))
        return plain, extras

    base, _ = names(project["dependencies"])
    extras: dict[str, set[str]] = {}

    def expand(extra: str) -> set[str]:
        if extra not in extras:
            plain, nested = names(project["optional-dependencies"][extra])
            extras[extra] = plain.union(*(expand(e) for e in nested))
        return extras[extra]

    for extra in project["optional-dependencies"]:
        expand(extra)
    return base, extras


def _distributions(top: str) -> set[str]:
    """The installed distributions that provide import name `top`."""
    found = importlib.metadata.packages_distributions().get(top, [])
    return {_normal(d) for d in found} or {_normal(_DIST_OF.get(top, top))}


def test_the_shared_layer_depends_on_no_program() -> None:
    for module, path in _ALL[SHARED].items():
        leaning = {n for n in _imports(module, path) if n.split(".")[0] in PROGRAMS}
        assert not leaning, f"{module} imports {sorted(leaning)}: the shared layer depends on no program"


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_a_program_leans_on_no_other(program: str) -> None:
    for module, path in _ALL[program].items():
        others = {n.split(".")[0] for n in _imports(module, path)} & set(PROGRAMS) - {program}
        assert others <= MAY_USE[program], (
            f"{module} imports {sorted(others - MAY_USE[program])}: share it through `cloudseat` instead"
        )


@pytest.mark.parametrize("program", list(PROGRAMS))
def test_every_import_is_in_the_programs_extra(program: str) -> None:
    base, extras = _requirements()
    allowed = base | extras[PROGRAMS[program]]
    _, third = _closure(program)
    missing = {top: sorted(_distributions(top)) for top in third if not _distributions(top) & allowed}
    assert not missing, (
        f"{program} imports {missing}, which neither the base nor .[{PROGRAMS[program]}] installs"
    )


def test_a_seat_installs_no_solver_database_driver_or_browser_driver() -> None:
    _, extras = _requirements()
    assert not {"ortools", "asyncpg", "pgserver", "playwright"} & extras["seat"]
    assert not {"ortools", "asyncpg", "pgserver", "playwright"} & extras["agent"]


# What importing a whole program must not pull in, whatever is installed beside it.
_FORBIDDEN = {
    "thin_client": ["ortools", "asyncpg", "pgserver", "playwright", "broker", "gpu_agent", "loadtest"],
    "gpu_agent": [
        "ortools",
        "asyncpg",
        "pgserver",
        "playwright",
        "aiohttp",
        "broker",
        "thin_client",
        "loadtest",
    ],
    "broker": ["aiortc", "av", "pygame", "playwright", "gpu_agent", "thin_client", "loadtest"],
}


@pytest.mark.parametrize("program", list(_FORBIDDEN))
def test_importing_a_program_loads_none_of_the_others(program: str) -> None:
    modules = [m for m in _ALL[program] if not m.endswith("__main__")]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & set({_FORBIDDEN[program]!r}))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYGAME_HIDE_SUPPORT_PROMPT": "1", "SDL_VIDEODRIVER": "dummy"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
