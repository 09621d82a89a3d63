"""Named SQL queries, loaded once from the .sql files in sql/.

Each file holds blocks that start with a `-- name: NAME` line; the text up to the next such line is the query.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load() -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in sorted(resources.files("broker.store").joinpath("sql").iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        parts = _NAME.split(text)
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"query {name!r} is defined twice ({entry.name})")
            found[name] = body.strip()
    return found


Q: dict[str, str] = _load()
