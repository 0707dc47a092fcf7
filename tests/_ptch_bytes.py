"""Byte-level surgery on .ptch files for corruption tests (layout: csrc/pypatch/io/README.md)."""
from __future__ import annotations

import struct
import zlib


def section_table(data: bytes) -> dict:
    """{kind: (table entry offset, section offset, size)} of a .ptch file."""
    count = struct.unpack_from("<I", data, 24)[0]
    out = {}
    for i in range(count):
        e = 128 + 32 * i
        kind, _, off, size = struct.unpack_from("<4sIQQ", data, e)
        out[kind.decode()] = (e, off, size)
    return out


def replace_section(data: bytes, kind: str, body: bytes, fix_crc: bool) -> bytes:
    """Replace a section's bytes (same size). ``fix_crc``: make every CRC valid again, so only
    the index loader's own checks can reject the result; otherwise the section's CRC is stale."""
    d = bytearray(data)
    e, off, size = section_table(data)[kind]
    assert len(body) == size
    d[off:off + size] = body
    if fix_crc:
        struct.pack_into("<I", d, e + 24, zlib.crc32(body))
        count = struct.unpack_from("<I", d, 24)[0]
        struct.pack_into("<I", d, 48, zlib.crc32(bytes(d[128:128 + 32 * count])))
        struct.pack_into("<I", d, 52, 0)
        struct.pack_into("<I", d, 52, zlib.crc32(bytes(d[:128])))
    return bytes(d)
