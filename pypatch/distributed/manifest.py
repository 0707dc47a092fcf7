"""``manifest.json`` of a sharded index: written last (atomically), checked on open.

A sharded index is a folder::

    manifest.json        this file
    codebooks.ptch       an empty ImageIndex holding the trained quantizer and pre-transform
    shard-00000.ptch     ImageIndex files (today's .ptch format), all built from codebooks.ptch
    ...

The manifest records the format version, the pypatch that wrote it, the model record (card,
file sha256), the codebooks file and every shard file with its sha256, byte size and counts.
Global image order (the tie-break of the merged ranking) is shard order, then row.
"""
from __future__ import annotations

import json
import os
import tempfile

from pypatch.errors import IndexFormatError, IndexVersionError
from pypatch.models import file_sha256

MANIFEST = "manifest.json"
CODEBOOKS = "codebooks.ptch"
FORMAT = "pypatch.sharded_index"
VERSION = 1


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.ptch"


def file_entry(folder, name: str, **counts) -> dict:
    """The manifest entry of one file of ``folder`` (sha256, bytes, counts)."""
    path = os.path.join(folder, name)
    return {"file": name, "sha256": file_sha256(path), "bytes": os.path.getsize(path), **counts}


def write_json_atomic(path, data: dict) -> None:
    """Temp file in the same folder, fsync, rename: readers see the old or the new file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def new_manifest(model: dict, codebooks: dict, shards: list, version: str) -> dict:
    return {"format": FORMAT, "version": VERSION, "created_by": f"pypatch {version}",
            "model": model, "codebooks": codebooks, "shards": shards,
            "images": sum(s["images"] for s in shards),
            "patches": sum(s["patches"] for s in shards)}


def is_sharded(path) -> bool:
    """True for a sharded index folder (or its manifest.json)."""
    path = os.fspath(path)
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, MANIFEST))) or \
        os.path.basename(path) == MANIFEST


def folder_of(path) -> str:
    path = os.fspath(path)
    return os.path.dirname(os.path.abspath(path)) if os.path.basename(path) == MANIFEST else path


def read_manifest(folder, verify: bool = True) -> dict:
    """The checked manifest of ``folder`` (IndexFormatError / IndexVersionError, one line).

    Every listed file must exist with its recorded size; with ``verify`` its sha256 too."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        if os.path.isdir(folder):
            raise IndexFormatError(f"{folder!r}: no {MANIFEST}: not a sharded pypatch index")
        raise FileNotFoundError(f"index not found: {folder!r}")
    try:
        with open(path, encoding="utf-8") as f:
            man = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path!r}: not valid JSON ({exc})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise IndexFormatError(f"{path!r}: not a pypatch sharded index manifest")
    version = man.get("version")
    if not isinstance(version, int) or version < 1:
        raise IndexFormatError(f"{path!r}: bad manifest version {version!r}")
    if version > VERSION:
        raise IndexVersionError(f"{path!r}: manifest version {version} is newer than this "
                                f"pypatch (supports {VERSION}); upgrade pypatch")
    shards = man.get("shards")
    if (not isinstance(shards, list) or not shards or not isinstance(man.get("codebooks"), dict)
            or not isinstance(man.get("model"), dict)):
        raise IndexFormatError(f"{path!r}: manifest lacks its shards, codebooks or model")
    for entry in [man["codebooks"], *shards]:
        check_file(folder, entry, verify)
    return man


def check_file(folder, entry, verify: bool) -> None:
    """One listed file: a plain name in ``folder``, present, of the recorded size and hash."""
    if not isinstance(entry, dict) or not all(k in entry for k in ("file", "sha256", "bytes")):
        raise IndexFormatError(f"{folder!r}: manifest entry {entry!r} lacks file/sha256/bytes")
    name = entry["file"]
    if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
        raise IndexFormatError(f"{folder!r}: manifest names a file outside the folder: {name!r}")
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise IndexFormatError(f"{folder!r}: missing shard file {name!r} listed in the manifest")
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        raise IndexFormatError(f"{path!r}: {size} bytes but the manifest records "
                               f"{entry['bytes']} (changed or truncated)")
    if verify and file_sha256(path) != entry["sha256"]:
        raise IndexFormatError(f"{path!r}: sha256 differs from the manifest's (changed or "
                               f"corrupted file)")
