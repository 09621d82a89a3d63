"""The audit log's hash chain: what a row's hash is, and how a walk over the chain finds an edit or a gap. Pure.

Each sealed row carries its place in the chain (`chain_no`, 1, 2, 3 … without gaps), the hash of the row before it
(`prev_hash`; GENESIS for the first) and its own hash: SHA-256 over the previous hash and every field of the row in
a fixed canonical form (JSON array; `detail` as the database renders its jsonb, time as microseconds since the epoch).
Changing any field of a row changes its hash; removing a row leaves a gap in chain_no and a prev_hash that matches
nothing. Removing the newest rows leaves a shorter, valid chain: only a head (chain_no, hash) recorded elsewhere
shows that, which is why `cloudseat-broker audit verify` prints the head it reached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

GENESIS = "0" * 64


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    seq: int
    at_us: int
    actor: str
    tenant: str
    action: str
    target: str
    detail: str
    peer: str


def row_hash(prev_hash: str, row: Row) -> str:
    """The hash of `row` chained after a row whose hash is `prev_hash`."""
    canonical = json.dumps(
        [prev_hash, row.seq, row.at_us, row.actor, row.tenant, row.action, row.target, row.detail, row.peer],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Break:
    """Where the chain does not hold: the chain number, the row's seq (None for a missing row), and why."""

    chain_no: int
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"chain {self.chain_no}" + (f" (audit row seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.problem}"


class Walk:
    """Feed the sealed rows in chain order (`step`); every break found is returned where it is seen."""

    def __init__(self) -> None:
        self.chain_no = 0
        self.hash = GENESIS
        self.rows = 0

    def step(self, chain_no: int, prev_hash: str, stored_hash: str, row: Row) -> list[Break]:
        found: list[Break] = []
        expected_no = self.chain_no + 1
        if chain_no != expected_no:
            missing = f"{expected_no}" if chain_no == expected_no + 1 else f"{expected_no}..{chain_no - 1}"
            found.append(Break(expected_no, None, f"missing: rows {missing} of the chain were removed"))
        if prev_hash != self.hash:
            found.append(
                Break(chain_no, row.seq, "its previous-row hash does not match the row before it (a row removed "
                      "or rewritten before it)")
            )  # fmt: skip
        recomputed = row_hash(prev_hash, row)
        if recomputed != stored_hash:
            found.append(Break(chain_no, row.seq, "edited: its fields no longer give its hash"))
        self.chain_no, self.hash = chain_no, stored_hash
        self.rows += 1
        return found
