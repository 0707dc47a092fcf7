"""Mutation fuzzer over pypatch index files: PatchIndex (flat, flat16, PQ 8/4-bit, with a
pre-transform, with removed images, inverted files, residual-quantizer files: PIDX version 4 +
RQCB) and ImageIndex files (META formats 1-3, pyramid / R-MAC / sliding grids), plus the golden
files of tests/data.

Every mutated file is loaded eagerly and mapped (``mmap=True``, sometimes ``verify=True``) in a
worker process, as a PatchIndex and, for ImageIndex seeds, as an ImageIndex; what loads is then
used (search, info, reconstruct, image_info, to_bytes round trip, compact). A case passes when
every step either works or raises a ``pypatch.errors.PypatchError`` subclass. Any other
exception, a crash of the worker (segfault, abort) or a hang (no answer within ``--timeout``
seconds) is a failure, reported with the seed, case number and mutation, and the file is
kept under ``--save DIR``.

Mutations: bit flips, byte sets, truncation, extension; header and section-table fields set
to edge values with the CRCs made valid again; section bodies edited at their fields (PIDX
counts, IOFF offsets, XFRM dims, floats set to NaN/inf) with the CRCs fixed; sections dropped,
duplicated, resized or added (the container rewritten); the metadata JSON edited (keys dropped,
values swapped for other types, numbers perturbed, text cut), rewritten by the native writer.
Fixing the CRCs lets the fuzzer past the checksums, to the loaders' own checks.

    python tests/fuzz/fuzz_index_files.py --iterations 100000 --seed 1 --jobs 2 --save /tmp/fz
    python tests/fuzz/fuzz_index_files.py --seed 1 --case 4711      # replay one case, in-process
    python -m tests.fuzz.fuzz_index_files --iterations 2000          # from the repository root

The CI test (tests/index/test_fuzz_index_files.py) runs a few thousand seeded cases. Cases are
numbered per seed and each draws from its own ``random.Random(f"{seed}:{case}")``, so any
reported case replays alone.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
if str(TESTS) not in sys.path:  # tests/_ptch_bytes.py, tests/_image_index_files.py
    sys.path.insert(0, str(TESTS))

from _ptch_bytes import section_table  # noqa: E402

GOLDEN = [TESTS / "data" / "format_v1" / "flat_float16.ptch",
          TESTS / "data" / "format_v1" / "pq_m4_nbits8.ptch",
          TESTS / "data" / "format_v2" / "flat_pca8_l1.ptch",
          TESTS / "data" / "format_ivf" / "ivf4.ptch",
          TESTS / "data" / "format_ivf3" / "ivf4.ptch"]
U32_EDGES = [0, 1, 2, 3, 4, 7, 8, 16, 63, 64, 65, 255, 256, 4096, 4097, 1 << 20, (1 << 20) + 1,
             (1 << 31) - 1, 1 << 31, (1 << 32) - 1]
U64_EDGES = U32_EDGES + [1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, (1 << 64) - 64]
BYTE_EDGES = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, 0x20, 0x22, 0x7B, 0x7D, 0x5B, 0x2C]
FLOAT_EDGES = [float("nan"), float("inf"), float("-inf"), 3.0e38, -3.0e38, 1e-45, 0.0, -0.0,
               65504.0, 65536.0]
PIDX_FIELDS = [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 4), (28, 4), (32, 8),
               (40, 8), (48, 8), (56, 4), (60, 4),
               (64, 4)]  # csrc/pypatch/index/patch_index_io.cpp HeaderFields; 64: version 4 only
XFRM_FIELDS = [(0, 4), (4, 4), (8, 4), (12, 4)]
HEADER_FIELDS = [(8, 2), (10, 2), (12, 4), (16, 4), (20, 4), (24, 4), (28, 4), (32, 8), (40, 8)]
TABLE_FIELDS = [(0, 4), (4, 4), (8, 8), (16, 8), (24, 4), (28, 4)]


# ------------------------------------------------------------------------------ the seeds
def make_seeds(root: Path) -> list:
    """[(name, path, is_image_index)] of small valid files (deterministic)."""
    import numpy as np

    from _image_index_files import fake_image_index
    from pypatch import PatchIndex, ProductQuantizer, ResidualQuantizer

    rng = np.random.default_rng(20260301)
    counts = [3, 0, 5, 1, 4, 2, 6]  # an empty image too
    x = rng.standard_normal((sum(counts), 16)).astype(np.float32)
    train = rng.standard_normal((300, 16)).astype(np.float32)
    out = []

    def save(name, index, image=False):
        path = root / f"{name}.ptch"
        index.save(path)
        out.append((name, path, image))

    for dtype in ("float32", "float16"):
        ix = PatchIndex(16, flat_dtype=dtype)
        ix.add(x, patches_per_image=counts)
        ix.remove([2])
        ix.metadata = {"ids": [f"i{i}" for i in range(len(counts))], "n": 7, "nested": {"a": [1.5]}}
        save(f"patch_{dtype}", ix)
    for nbits in (8, 4):
        ix = PatchIndex(16, ProductQuantizer(16, 4, nbits=nbits))
        ix.train(train, iters=2)
        ix.add(x, patches_per_image=counts)
        ix.remove([0, 5])
        ix.metadata = {"pq": nbits}
        if nbits == 4:
            q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
            ix.set_transform(rng.standard_normal(16).astype(np.float32),
                             np.ascontiguousarray(q, dtype=np.float32))
        save(f"patch_pq{nbits}", ix)
    for nbits in (8, 4):  # inverted files: PIDX version 3, IVFC/IVFN/IVFP, per-list CODE
        ix = PatchIndex(16, ProductQuantizer(16, 4, nbits=nbits), nlist=3)
        ix.train(train, iters=2)
        ix.add(x, patches_per_image=counts)
        ix.remove([1, 4])
        save(f"patch_ivf{nbits}", ix)
    for nbits, nlist in ((8, None), (4, None), (8, 3)):  # PIDX version 4, codebooks in RQCB
        ix = PatchIndex(16, ResidualQuantizer(16, 3, nbits=nbits), nlist=nlist)
        ix.train(train, iters=2)
        ix.add(x, patches_per_image=counts)
        ix.remove([3])
        ix.metadata = {"rq": nbits}
        save(f"patch_rq{nbits}" if nlist is None else f"patch_ivf_rq{nbits}", ix)
    save("image_flat_l1", fake_image_index("flat", "L1"), True)
    save("image_pq_rmac_xfrm", fake_image_index("pq", "rmac1", pca_dim=8), True)
    save("image_flat16_sliding", fake_image_index("flat16", "sliding", sizes=[(40, 30), (25, 60)]),
         True)
    for g in GOLDEN:
        path = root / g.name
        shutil.copyfile(g, path)
        out.append((g.stem, path, g.parent.name == "format_v2"))
    return out


def fake_image_index_file(path: Path) -> None:
    """One valid ImageIndex file (for the harness's own tests)."""
    from _image_index_files import fake_image_index

    fake_image_index("flat", "L1").save(path)


# ------------------------------------------------------------------------------ container bytes
def fix_crcs(d: bytearray, sections: bool = True) -> bytearray:
    """Make the section CRCs (``sections``), the table CRC and the header CRC valid again,
    reading the table as it now is (entries pointing outside the file keep their CRC)."""
    count = struct.unpack_from("<I", d, 24)[0]
    table_end = 128 + 32 * count
    if table_end <= len(d):
        if sections:
            for i in range(count):
                e = 128 + 32 * i
                off, size = struct.unpack_from("<QQ", d, e + 8)
                if off + size <= len(d):
                    struct.pack_into("<I", d, e + 24, zlib.crc32(bytes(d[off:off + size])))
        struct.pack_into("<I", d, 48, zlib.crc32(bytes(d[128:table_end])))
    if len(d) >= 128:
        struct.pack_into("<I", d, 52, 0)
        struct.pack_into("<I", d, 52, zlib.crc32(bytes(d[:128])))
    return d


def build_container(sections: list, minor: int = 0) -> bytes:
    """A valid .ptch container of ``[(kind, flags, body)]`` (csrc/pypatch/io/README.md)."""
    count = len(sections)
    pos = -(-(128 + 32 * count) // 64) * 64
    table, bodies = bytearray(), []
    for kind, flags, body in sections:
        table += struct.pack("<4sIQQII", kind.encode("latin-1")[:4].ljust(4, b" "), flags, pos,
                             len(body), zlib.crc32(body), 0)
        bodies.append((pos, body))
        pos = -(-(pos + len(body)) // 64) * 64
    d = bytearray(pos)
    d[:8] = b"\x89PTCH\r\n\x1a"
    struct.pack_into("<HHIIIII QQ", d, 8, 1, minor, 128, 0x01020304, 0, count, 0, 128, pos)
    d[128:128 + len(table)] = table
    for off, body in bodies:
        d[off:off + len(body)] = body
    return bytes(fix_crcs(d, sections=False))


def read_sections(data: bytes) -> list:
    """[(kind, flags, body)] in table order."""
    out = []
    for kind, (e, off, size) in section_table(data).items():
        flags = struct.unpack_from("<I", data, e + 4)[0]
        out.append((kind, flags, data[off:off + size]))
    return out


# ------------------------------------------------------------------------------ mutations
def _pos(r: random.Random, n: int) -> int:
    """A position, biased to the header and the table (where one byte steers everything)."""
    return r.randrange(min(n, 512)) if r.random() < 0.5 else r.randrange(n)


def _int_edge(r: random.Random, size: int, current: int) -> int:
    edges = U64_EDGES if size == 8 else U32_EDGES
    v = r.choice(edges + [current + 1, max(current - 1, 0), current * 2, current + 64])
    return v % (1 << (8 * size))


def _put(d: bytearray, off: int, size: int, value: int) -> None:
    d[off:off + size] = value.to_bytes(size, "little")


def m_bitflip(r, data, seed):
    d = bytearray(data)
    flips = [(_pos(r, len(d)), r.randrange(8)) for _ in range(r.choice([1, 1, 2, 4]))]
    for p, b in flips:
        d[p] ^= 1 << b
    return bytes(d), f"bitflip {flips}"


def m_byteset(r, data, seed):
    d = bytearray(data)
    p, v = _pos(r, len(d)), r.choice(BYTE_EDGES + [r.randrange(256)])
    d[p] = v
    return bytes(d), f"byte[{p}] = {v:#x}"


def m_truncate(r, data, seed):
    n = r.choice([0, 1, 8, 127, 128, 129, 160, r.randrange(len(data)),
                  len(data) - 1, len(data) - 64, (r.randrange(len(data)) // 64) * 64])
    n = max(0, min(n, len(data) - 1))
    return data[:n], f"truncate to {n} of {len(data)}"


def m_extend(r, data, seed):
    n = r.choice([1, 63, 64, 4096])
    tail = bytes(n) if r.random() < 0.5 else r.randbytes(n)
    d = bytearray(data + tail)
    fixed = r.random() < 0.5
    if fixed:  # file_bytes follows, so only the trailing bytes differ
        struct.pack_into("<Q", d, 40, len(d))
        fix_crcs(d, sections=False)
    return bytes(d), f"extend by {n} {'zero' if not any(tail) else 'random'} bytes, " \
                     f"file_bytes {'fixed' if fixed else 'stale'}"


def m_header_field(r, data, seed):
    d = bytearray(data)
    off, size = r.choice(HEADER_FIELDS)
    v = _int_edge(r, size, int.from_bytes(d[off:off + size], "little"))
    _put(d, off, size, v)
    fix_crcs(d, sections=False)
    return bytes(d), f"header[{off}:{off + size}] = {v}, CRCs fixed"


def m_table_field(r, data, seed):
    d = bytearray(data)
    table = section_table(data)
    kind = r.choice(sorted(table))
    e = table[kind][0]
    off, size = r.choice(TABLE_FIELDS)
    cur = int.from_bytes(d[e + off:e + off + size], "little")
    if off == 0:
        v = int.from_bytes(r.choice([b"PIDX", b"META", b"IOFF", b"TOMB", b"CODE", b"VECS",
                                     b"PQCB", b"RQCB", b"XFRM", b"ZZZZ", b"\0\0\0\0"]), "little")
    else:
        v = _int_edge(r, size, cur)
    _put(d, e + off, size, v)
    fix_crcs(d, sections=off != 24)
    return bytes(d), f"table[{kind}][{off}:{off + size}] = {v}, CRCs fixed"


def _fields(r: random.Random, kind: str, size: int) -> list:
    """[(offset, bytes, "u" int / "f" float32 / "h" float16)] worth editing in a section."""
    def at(step):
        return step * r.randrange(size // step) if size >= step else 0

    fields = {"PIDX": [(o, n, "u") for o, n in PIDX_FIELDS],
              "XFRM": [(o, n, "u") for o, n in XFRM_FIELDS] + [(64 + 4 * r.randrange(8), 4, "f")],
              "IOFF": [(at(8), 8, "u")],
              "VECS": [(at(4), 4, "f"), (at(2), 2, "h")],
              "PQCB": [(at(4), 4, "f")],
              "RQCB": [(at(4), 4, "f")],
              "IVFC": [(at(4), 4, "f")],
              "IVFN": [(at(8), 8, "u")],
              "IVFI": [(at(4), 4, "u")],
              "IVFO": [(at(1), 1, "u")],
              "IVFP": [(0, 4, "u"), (4, 4, "u"), (64 + at(4), 4, "u")]}.get(kind, [(r.randrange(size), 1, "u")])
    return [(o, n, t) for o, n, t in fields if o + n <= size] or [(0, 1, "u")]


def m_section_body(r, data, seed):
    d = bytearray(data)
    table = section_table(data)
    kind = r.choice(sorted(table))
    _, off, size = table[kind]
    if size == 0:
        return m_bitflip(r, data, seed)
    fields = _fields(r, kind, size)
    fo, fs, ty = r.choice(fields)
    if ty == "f":
        v = r.choice(FLOAT_EDGES)
        struct.pack_into("<f", d, off + fo, v)
    elif ty == "h":
        v = r.choice([0x7C00, 0xFC00, 0x7E00, 0x7BFF])  # float16 inf, -inf, NaN, max
        _put(d, off + fo, 2, v)
    else:
        v = _int_edge(r, fs, int.from_bytes(d[off + fo:off + fo + fs], "little"))
        if fs == 1:
            v = r.choice(BYTE_EDGES)
        _put(d, off + fo, fs, v)
    fix_crcs(d)
    return bytes(d), f"{kind}[{fo}:{fo + fs}] = {v!r}, CRCs fixed"


def m_sections(r, data, seed):
    secs = read_sections(data)
    op = r.choice(["drop", "dup", "shrink", "grow", "add", "swap"])
    i = r.randrange(len(secs))
    kind, flags, body = secs[i]
    if op == "drop":
        secs.pop(i)
    elif op == "dup":
        secs.insert(r.randrange(len(secs) + 1), (kind, flags, body))
    elif op == "shrink":
        secs[i] = (kind, flags, body[:r.choice([0, len(body) // 2, max(len(body) - 1, 0),
                                                  max(len(body) - 8, 0)])])
    elif op == "grow":
        secs[i] = (kind, flags, body + bytes(r.choice([1, 4, 8, 64])))
    elif op == "add":
        secs.insert(r.randrange(len(secs) + 1), (r.choice(["ZZZZ", "XFRM", "PQCB", "RQCB", "TOMB", "IVFC"]), 0,
                                                 r.randbytes(r.choice([0, 4, 64, 200]))))
    else:
        j = r.randrange(len(secs))
        secs[i], secs[j] = secs[j], secs[i]
    return build_container(secs), f"sections: {op} {kind} (container rewritten, CRCs valid)"


def _json_edit(r: random.Random, value, depth: int = 0):
    """One random edit somewhere inside ``value`` (returns the new value, a description)."""
    containers = isinstance(value, (dict, list)) and len(value) > 0
    if containers and (depth == 0 or r.random() < 0.75):
        keys = list(value) if isinstance(value, dict) else list(range(len(value)))
        k = r.choice(keys)
        if r.random() < 0.2 and isinstance(value, dict):
            new = dict(value)
            del new[k]
            return new, f"drop {k!r}"
        sub, what = _json_edit(r, value[k], depth + 1)
        new = dict(value) if isinstance(value, dict) else list(value)
        new[k] = sub
        return new, f"{k!r}.{what}"
    swaps = [None, True, False, 0, -1, 1, 2 ** 31, 2 ** 63, 2 ** 70, 0.5, -1.5, 1e308, "", "x",
             "pq", "pyramid", [], [1], {}, {"kind": "pca"}]
    if type(value) is int and r.random() < 0.5:
        new = r.choice([value + 1, value - 1, -value, value * 1000, value + 2 ** 32])
    elif type(value) is float and r.random() < 0.5:
        new = r.choice([value * 2, -value, value + 1e-3, 0.0])
    elif isinstance(value, str) and r.random() < 0.5:
        new = r.choice([value[:-1], value + "x", value.upper(), value * 2])
    elif isinstance(value, list) and r.random() < 0.5:
        new = r.choice([value[:-1], value + value[-1:], value[::-1], [value]])
    else:
        new = r.choice(swaps)
    return new, f"{_short(value)} -> {_short(new)}"


def _short(v) -> str:
    t = repr(v)
    return t if len(t) <= 40 else t[:37] + "..."


def m_meta(r, data, seed):
    from pypatch import PatchIndex

    ix = PatchIndex.from_bytes(data)
    user = json.loads(ix._ix.metadata_json)
    kind = r.random()
    if kind < 0.8:
        new, what = _json_edit(r, user)
        text = json.dumps(new)
    else:  # raw text damage: the writer stores any text
        text = json.dumps(user)
        cut = r.randrange(len(text) + 1)
        text, what = r.choice([(text[:cut], f"cut at {cut}"),
                               (text[:cut] + r.choice("{}[],:\"\\0") + text[cut:], f"insert at {cut}"),
                               ("[" * 50_000, "deep nesting"), ("null", "null"),
                               (text.replace("0", "NaN", 1), "NaN")])
    ix._ix.metadata_json = text
    return ix._ix.to_bytes(), f"metadata JSON: {what}"


MUTATIONS = [(m_bitflip, 3), (m_byteset, 2), (m_truncate, 1), (m_extend, 1),
             (m_header_field, 2), (m_table_field, 3), (m_section_body, 5), (m_sections, 2),
             (m_meta, 6)]


def make_case(seed: int, case: int, seeds: list) -> dict:
    """Case ``case`` of ``seed``: which seed file, which mutation, the bytes."""
    r = random.Random(f"{seed}:{case}")
    name, path, image = r.choice(seeds)
    data = Path(path).read_bytes()
    fn = r.choices([m for m, _ in MUTATIONS], weights=[w for _, w in MUTATIONS])[0]
    mutated, what = fn(r, data, seed)
    return {"case": case, "seed_file": name, "image": image, "mutation": what, "data": mutated,
            "verify": r.random() < 0.3}


# ------------------------------------------------------------------------------ the worker side
def exercise(path: str, image: bool, mmap: bool, verify: bool) -> str:
    """Load and use one file; returns "loaded" or "refused: Type"; raises on anything else."""
    import numpy as np

    from pypatch import ImageIndex, PatchIndex
    from pypatch.errors import PypatchError

    rng = np.random.default_rng(0)
    outcomes = []
    try:
        p = PatchIndex.load(path, mmap=mmap, verify=verify)
        len(p), p.num_patches, p.num_removed, repr(p), p.memory_usage(), p.removed, p.metadata
        q = rng.standard_normal((2, int(p.dim))).astype(np.float32)
        p.search(q, k=5)
        for i in {0, len(p) - 1} if len(p) else ():
            p.reconstruct(i)
        PatchIndex.from_bytes(p.to_bytes()).search(q, k=3)
        if p.transform is not None:
            p.apply_transform(rng.standard_normal(p.transform[0].shape[0]).astype(np.float32))
        if p.num_removed:
            p.compact()
            p.search(q, k=3)
        outcomes.append("patch loaded")
    except PypatchError as exc:
        outcomes.append(f"patch refused: {type(exc).__name__}: {exc}")
    if image:
        try:
            ix = ImageIndex.load(path, mmap=mmap, verify=verify)
            info = ix.info()
            repr(ix), ix.ids, len(ix)
            q = rng.standard_normal((2, info["dim"])).astype(np.float32)
            for row in ix.search_vectors(q, k=4):
                for hit in row:
                    ix.image_info(hit.image)
            if len(ix):
                ix.remove(ix.ids[0])
                ix.search_vectors(q, k=2)
            outcomes.append("image loaded")
        except PypatchError as exc:
            outcomes.append(f"image refused: {type(exc).__name__}: {exc}")
    return " | ".join(outcomes)


def _selftest(what: str) -> None:
    if what == "abort":
        os.abort()
    if what == "segv":
        import ctypes

        ctypes.string_at(0)
    if what == "hang":
        time.sleep(3600)


def worker_main() -> int:
    """Answer one JSON line per request line on stdin (the parent watches for crashes/hangs)."""
    import faulthandler

    faulthandler.enable()  # a segfault prints the Python stack to stderr (kept by the parent)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the protocol
    for line in sys.stdin:
        req = json.loads(line)
        if "selftest" in req:  # lets the tests check that the parent catches what follows
            _selftest(req["selftest"])
        try:
            res = {"ok": True, "outcome": exercise(req["path"], req["image"], req["mmap"],
                                                   req["verify"])}
        except Exception:  # the finding: an untyped exception
            res = {"ok": False, "error": traceback.format_exc(limit=8)}
        out.write(json.dumps(res) + "\n")
    return 0


# ------------------------------------------------------------------------------ the parent side
class Worker:
    """One child process running ``worker_main``; restarted after a crash or a hang."""

    def __init__(self, tmp: Path, n: int):
        self.tmp, self.n, self.proc, self.buf = tmp, n, None, b""
        self.err_path = tmp / f"worker{n}.stderr"

    def start(self):
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, env=dict(os.environ, PYTHONFAULTHANDLER="1"))
        self.buf = b""

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.err.close()
            self.proc = None

    def ask(self, req: dict, timeout: float) -> dict:
        if self.proc is None:
            self.start()
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            ready = select.select([self.proc.stdout], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.stop()
                return {"ok": False, "error": f"hang: no answer within {timeout:g} s"}
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:  # the worker died
                rc = self.proc.wait()
                self.stop()
                tail = self.err_path.read_bytes()[-3000:].decode("utf-8", "replace")
                return {"ok": False, "error": f"crash: worker exit status {rc}\n{tail}"}
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def run(seed: int = 0, iterations: int = 1000, *, start: int = 0, jobs: int = 1,
        timeout: float = 20.0, save: str | None = None, progress: bool = False) -> dict:
    """Fuzz ``iterations`` cases of ``seed`` on ``jobs`` workers (one thread each feeds its
    worker cases ``start + j, start + j + jobs, ...``); returns {"cases", "loads", "outcomes"
    (counts by kind), "reasons" (refusal messages, numbers blanked, with counts), "failures"
    (list of dicts: seed, case, seed_file, mutation, mmap, verify, error)}."""
    import threading

    tmp = Path(tempfile.mkdtemp(prefix="pypatch-fuzz-"))
    workers = [Worker(tmp, i) for i in range(max(1, jobs))]
    stats = {"seed": seed, "cases": 0, "loads": 0, "outcomes": {}, "reasons": {},
             "failures": []}
    lock = threading.Lock()
    t0 = time.monotonic()

    def record(c: dict, mmap: bool, res: dict) -> None:
        stats["loads"] += 1
        if res["ok"]:
            for part in res["outcome"].split(" | "):
                key = part.split(":")[0]
                stats["outcomes"][key] = stats["outcomes"].get(key, 0) + 1
                if "refused" in key:  # which check refused it (file name and numbers out)
                    why = re.sub(r"'?/\S*\.ptch'?:? ?", "", part.split(": ", 2)[-1])
                    why = re.sub(r"\d+", "#", why)[:70]
                    stats["reasons"][why] = stats["reasons"].get(why, 0) + 1
            return
        stats["failures"].append({"seed": seed, "case": c["case"], "seed_file": c["seed_file"],
                                  "mutation": c["mutation"], "mmap": mmap,
                                  "verify": c["verify"], "error": res["error"]})
        if save:
            Path(save).mkdir(parents=True, exist_ok=True)
            (Path(save) / f"seed{seed}-case{c['case']}.ptch").write_bytes(c["data"])
        if progress:
            print(f"FAIL seed {seed} case {c['case']} ({c['seed_file']}: {c['mutation']}, "
                  f"mmap={mmap}): {res['error'].strip().splitlines()[-1]}", flush=True)

    def feed(w: Worker, seeds: list, errors: list) -> None:
        try:
            path = tmp / f"case{w.n}.ptch"
            for case in range(start + w.n, start + iterations, len(workers)):
                with lock:
                    c = make_case(seed, case, seeds)
                path.write_bytes(c["data"])
                for mmap in (False, True):
                    res = w.ask({"path": str(path), "image": c["image"], "mmap": mmap,
                                 "verify": c["verify"]}, timeout)
                    with lock:
                        record(c, mmap, res)
                with lock:
                    stats["cases"] += 1
                    if progress and stats["cases"] % 1000 == 0:
                        print(f"{stats['cases']} cases, {len(stats['failures'])} failures, "
                              f"{time.monotonic() - t0:.0f} s", flush=True)
        except BaseException as exc:  # a bug of the fuzzer itself: re-raised by run()
            errors.append(exc)

    try:
        seeds = make_seeds(tmp)
        errors: list = []
        threads = [threading.Thread(target=feed, args=(w, seeds, errors)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    finally:
        for w in workers:
            w.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    stats["failures"].sort(key=lambda f: (f["case"], f["mmap"]))
    stats["seconds"] = round(time.monotonic() - t0, 1)
    return stats


def replay(seed: int, case: int) -> int:
    """Run one case in this process (a crash is then visible to a debugger)."""
    tmp = Path(tempfile.mkdtemp(prefix="pypatch-fuzz-"))
    try:
        c = make_case(seed, case, make_seeds(tmp))
        path = tmp / "case.ptch"
        path.write_bytes(c["data"])
        print(f"seed {seed} case {case}: {c['seed_file']}: {c['mutation']} (verify={c['verify']})")
        for mmap in (False, True):
            print(f"  mmap={mmap}: {exercise(str(path), c['image'], mmap, c['verify'])}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Mutation fuzzer over pypatch index files.")
    ap.add_argument("--iterations", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first case number")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per load before a hang")
    ap.add_argument("--save", default=None, metavar="DIR", help="keep failing files here")
    ap.add_argument("--case", type=int, default=None, help="replay one case in this process")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main()
    if args.case is not None:
        return replay(args.seed, args.case)
    stats = run(args.seed, args.iterations, start=args.start, jobs=args.jobs,
                timeout=args.timeout, save=args.save, progress=True)
    print(json.dumps({k: v for k, v in stats.items() if k not in ("failures", "reasons")},
                     indent=1))
    print(f"{len(stats['reasons'])} distinct refusal reasons; the most frequent:")
    for why, n in sorted(stats["reasons"].items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {n:7d}  {why}")
    for f in stats["failures"]:
        print(f"FAIL seed {f['seed']} case {f['case']} {f['seed_file']}: {f['mutation']} "
              f"(mmap={f['mmap']}, verify={f['verify']})\n{f['error']}")
    return 1 if stats["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
