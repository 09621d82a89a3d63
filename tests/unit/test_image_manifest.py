"""Image manifests: a built tree round-trips through its canonical JSON, and a hostile manifest is refused naming
the field (paths out of the tree, links out of it, absurd sizes, inconsistent chunks)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cloudseat.images import manifest, tree
from cloudseat.images.errors import ChunkCorrupt, ManifestError
from hypothesis import given, settings
from hypothesis import strategies as st

D1, D2 = "a" * 64, "b" * 64


def _doc(entries: list[dict[str, Any]], chunks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "format": manifest.FORMAT,
        "game_id": "arena",
        "version": "1",
        "chunks": chunks
        if chunks is not None
        else [{"digest": D1, "size": 3, "blob": D2, "stored_size": 12}],
        "entries": entries,
    }


GOOD = [
    {"path": "assets", "kind": "dir", "mode": 0o755},
    {"path": "assets/palette.bin", "kind": "file", "mode": 0o644, "size": 3},
    {"path": "assets/link", "kind": "symlink", "target": "palette.bin"},
    {"path": "up", "kind": "symlink", "target": "assets/palette.bin"},
]


def test_a_good_manifest_round_trips() -> None:
    parsed = manifest.parse(json.dumps(_doc(GOOD)).encode())
    assert parsed.image == "arena@1" and parsed.size == 3 and parsed.stored_size == 12
    assert manifest.parse(manifest.to_json(parsed)) == parsed
    assert [(e.path, off) for e, off in manifest.spans(parsed)] == [("assets/palette.bin", 0)]
    assert manifest.lacking(parsed, [D1]) == []


BAD: list[tuple[str, Any, str]] = [
    ("dotdot", [{"path": "../etc", "kind": "dir", "mode": 0o755}], "entries[0].path"),
    ("dotdot inside", [*GOOD[:1], {"path": "assets/../../x", "kind": "file", "mode": 0o644, "size": 3}],
     "entries[1].path"),
    ("absolute", [{"path": "/etc/passwd", "kind": "file", "mode": 0o644, "size": 3}], "entries[0].path"),
    ("empty part", [{"path": "a//b", "kind": "file", "mode": 0o644, "size": 3}], "entries[0].path"),
    ("link out", [{"path": "l", "kind": "symlink", "target": "../outside"}], "entries[0].target"),
    ("absolute link", [{"path": "l", "kind": "symlink", "target": "/etc"}], "entries[0].target"),
    ("link up midway", [{"path": "l", "kind": "symlink", "target": "a/../.."}], "entries[0].target"),
    ("through a link", [{"path": "l", "kind": "symlink", "target": "x"},
                        {"path": "l/f", "kind": "file", "mode": 0o644, "size": 3}], "entries[1].path"),
    ("parent unlisted", [{"path": "d/f", "kind": "file", "mode": 0o644, "size": 3}], "entries[0].path"),
    ("twice", [{"path": "f", "kind": "file", "mode": 0o644, "size": 3}, {"path": "f", "kind": "dir", "mode": 0o755}],
     "entries[1].path"),
    ("setuid", [{"path": "f", "kind": "file", "mode": 0o4755, "size": 3}], "entries[0].mode"),
    ("absurd size", [{"path": "f", "kind": "file", "mode": 0o644, "size": 1 << 50}], "entries[0].size"),
    ("negative size", [{"path": "f", "kind": "file", "mode": 0o644, "size": -1}], "entries[0].size"),
    ("bool size", [{"path": "f", "kind": "file", "mode": 0o644, "size": True}], "entries[0].size"),
    ("kind", [{"path": "f", "kind": "fifo", "mode": 0o644}], "entries[0].kind"),
    ("sizes disagree", [{"path": "f", "kind": "file", "mode": 0o644, "size": 4}], "chunks"),
]  # fmt: skip


@pytest.mark.parametrize(("entries", "field"), [(e, f) for _, e, f in BAD], ids=[n for n, _, _ in BAD])
def test_a_bad_tree_is_refused_naming_the_field(entries: list[dict[str, Any]], field: str) -> None:
    with pytest.raises(ManifestError) as refused:
        manifest.parse(json.dumps(_doc(entries)).encode())
    assert refused.value.field == field, refused.value


@pytest.mark.parametrize(
    ("chunk", "field"),
    [
        ({"digest": "xyz", "size": 3, "blob": D2, "stored_size": 12}, "chunks[0].digest"),
        ({"digest": D1, "size": 1 << 30, "blob": D2, "stored_size": 12}, "chunks[0].size"),
        ({"digest": D1, "size": 3, "blob": D2.upper(), "stored_size": 12}, "chunks[0].blob"),
        ({"digest": D1, "size": 3, "blob": D2, "stored_size": 0}, "chunks[0].stored_size"),
    ],
)
def test_a_bad_chunk_is_refused_naming_the_field(chunk: dict[str, Any], field: str) -> None:
    with pytest.raises(ManifestError) as refused:
        manifest.parse(json.dumps(_doc(GOOD, [chunk])).encode())
    assert refused.value.field == field


def test_the_same_bytes_under_two_blobs_is_refused() -> None:
    chunks = [{"digest": D1, "size": 3, "blob": D2, "stored_size": 12}, {"digest": D1, "size": 3, "blob": D1,
              "stored_size": 12}]  # fmt: skip
    entries = [{"path": "f", "kind": "file", "mode": 0o644, "size": 6}]
    with pytest.raises(ManifestError) as refused:
        manifest.parse(json.dumps(_doc(entries, chunks)).encode())
    assert refused.value.field == "chunks[1].blob"


@pytest.mark.parametrize(
    ("data", "field"),
    [(b"not json", "manifest"), (b"[]", "manifest"), (b'{"format": "other"}', "format"),
     (json.dumps({**_doc(GOOD), "game_id": "a b"}).encode(), "game_id"),
     (json.dumps({**_doc(GOOD), "entries": {}}).encode(), "entries")],
)  # fmt: skip
def test_a_document_that_is_no_manifest_is_refused(data: bytes, field: str) -> None:
    with pytest.raises(ManifestError) as refused:
        manifest.parse(data)
    assert refused.value.field == field


def _files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@settings(max_examples=15, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["a", "b/c", "b/d", "e/f/g", "h"]), st.binary(max_size=3000), min_size=1)
)
def test_a_built_tree_round_trips_and_its_chunks_rebuild_the_files(
    tmp_path_factory: Any, files: dict[str, bytes]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    _files(root, files)
    blobs: dict[str, bytes] = {}
    built = tree.build("g", "1", root, lambda c, b: blobs.setdefault(c.digest, b))
    assert manifest.parse(manifest.to_json(built)) == built
    stream = b"".join(tree.unpack(c, blobs[c.digest]) for c in built.chunks)
    for entry, offset in manifest.spans(built):
        assert stream[offset : offset + entry.size] == files[entry.path]


def test_build_refuses_a_link_out_of_the_tree_and_unpack_refuses_a_bad_blob(tmp_path: Path) -> None:
    _files(tmp_path / "t", {"f": b"x" * 100})
    os.symlink("../../etc", tmp_path / "t" / "out")
    with pytest.raises(ManifestError) as refused:
        tree.build("g", "1", tmp_path / "t", lambda c, b: None)
    assert refused.value.field.endswith(".target")
    os.unlink(tmp_path / "t" / "out")
    got: list[tuple[manifest.Chunk, bytes]] = []
    built = tree.build("g", "1", tmp_path / "t", lambda c, b: got.append((c, b)))
    chunk, blob = got[0]
    assert tree.unpack(chunk, blob) == b"x" * 100 and built.chunks == (chunk,)
    with pytest.raises(ChunkCorrupt):
        tree.unpack(chunk, blob[:-1] + bytes([blob[-1] ^ 1]))
