"""ImageIndex.load time of a 10k-image index: what checking META against the native sections costs.

    python benchmarks/bench_meta_load.py [--images 10000] [--repeat 20]

No model is run: seeded vectors (dim 64, flat float32) stand in for embeddings, and sizes are
drawn per image (so size-dependent grids have many distinct patch counts). Two grids: the
L3 pyramid (a constant 30 patches) and R-MAC (the count depends on each image's size). Reports
the p50 of ``ImageIndex.load`` (mmap and eager) and of the META check alone
(``pypatch.index.meta.read_meta``), and appends them to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import JsonlWriter, time_calls  # noqa: E402


def build(path: Path, n_images: int, regions: str, dim: int = 64) -> None:
    from pypatch.index.image_index import ImageIndex, _make_grid
    from pypatch.index.meta import new_meta
    from pypatch.index.training import new_patch_index

    rng = np.random.default_rng(0)
    grid, spec = _make_grid(regions)
    sizes = [(int(w), int(h)) for w, h in rng.integers(64, 2048, size=(n_images, 2))]
    counts = [grid.count(w, h) for w, h in sizes]
    model = {"name": "bench-fake", "spec": None, "path": None, "sha256": None,
             "card": {"name": "bench-fake", "dim": dim}}
    meta = new_meta(grid=grid, regions_spec=spec, mode="crop", store={"kind": "flat"},
                    model=model, dim=dim, transform=None)
    meta.update(ids=[f"img{i:06d}" for i in range(n_images)],
                paths=[f"/photos/folder/img{i:06d}.jpg" for i in range(n_images)],
                sizes=[list(s) for s in sizes])
    index = new_patch_index(dim, {"kind": "flat"})
    x = rng.standard_normal((sum(counts), dim)).astype(np.float32)
    index.add(x, patches_per_image=counts)
    ImageIndex(index, meta).save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", default=None, help="JSON-lines file (default benchmarks/results/)")
    args = ap.parse_args(argv)

    from pypatch import PatchIndex
    from pypatch.index.image_index import ImageIndex
    from pypatch.index.meta import read_meta

    out = JsonlWriter(args.out, "meta_load")
    print(f"{'regions':>8} {'images':>7} {'load mmap':>10} {'load eager':>11} {'META check':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for regions in ("L3", "rmac"):
            path = Path(tmp) / f"{regions}.ptch"
            build(path, args.images, regions)
            row = {"regions": regions, "images": args.images}
            for name, fn in (("load_mmap", lambda: ImageIndex.load(path, mmap=True)),
                             ("load_eager", lambda: ImageIndex.load(path, mmap=False))):
                row[name] = time_calls(fn, [()], warmup=2, repeat=args.repeat).as_dict()
            native = PatchIndex.load(path, mmap=True)
            row["meta_check"] = time_calls(lambda: read_meta(native, str(path)), [()], warmup=2,
                                           repeat=args.repeat).as_dict()
            out.write(row)
            print(f"{regions:>8} {args.images:>7} {row['load_mmap']['p50_ms']:>8.2f}ms "
                  f"{row['load_eager']['p50_ms']:>9.2f}ms {row['meta_check']['p50_ms']:>9.2f}ms")
    print("results:", out.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
