"""broker.audit_chain: a row's hash covers every field and the row before it; a walk names edits and gaps."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from broker import audit_chain
from broker.audit_chain import GENESIS, Row, Walk, row_hash


def _rows(n: int) -> list[Row]:
    return [Row(i, 1_700_000_000_000_000 + i, "venue:cafe", "venue:cafe", "seat.put", f"seat:{i}", "{}", "") for i in
            range(1, n + 1)]  # fmt: skip


def _chain(rows: list[Row]) -> list[tuple[int, str, str, Row]]:
    out, prev = [], GENESIS
    for no, row in enumerate(rows, 1):
        digest = row_hash(prev, row)
        out.append((no, prev, digest, row))
        prev = digest
    return out


def _walk(chain: list[tuple[int, str, str, Row]]) -> list[str]:
    walk = Walk()
    return [str(b) for entry in chain for b in walk.step(*entry)]


def test_every_field_and_the_previous_hash_change_the_hash() -> None:
    row = _rows(1)[0]
    base = row_hash(GENESIS, row)
    for name in ("seq", "at_us", "actor", "tenant", "action", "target", "detail", "peer"):
        value = getattr(row, name)
        changed = dataclasses.replace(row, **{name: value + 1 if isinstance(value, int) else value + "x"})
        assert row_hash(GENESIS, changed) != base, name
    assert row_hash("1" * 64, row) != base


def test_an_intact_chain_walks_clean() -> None:
    assert _walk(_chain(_rows(5))) == []


def test_an_edited_row_is_named() -> None:
    chain = _chain(_rows(4))
    no, prev, digest, row = chain[1]
    chain[1] = (no, prev, digest, dataclasses.replace(row, actor="someone-else"))
    assert _walk(chain) == ["chain 2 (audit row seq 2): edited: its fields no longer give its hash"]


def test_a_removed_row_is_a_gap_and_a_broken_link() -> None:
    chain = _chain(_rows(4))
    del chain[2]
    found = _walk(chain)
    assert found[0] == "chain 3: missing: rows 3 of the chain were removed"
    assert found[1].startswith("chain 4 (audit row seq 4): its previous-row hash does not match")


def test_pure() -> None:
    """The chain and the enrolment rule import no I/O (a fresh interpreter holds none of it afterwards)."""
    code = (
        f"import sys, {audit_chain.__name__}, broker.enrolment\n"
        "print(sorted(m for m in ('asyncio', 'asyncpg', 'grpc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
