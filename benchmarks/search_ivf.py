"""``bench_search.py --section ivf``: inverted files over patches, ours against faiss's (issue 11 item 5).

    python benchmarks/bench_search.py --section ivf                  # 1M images x 30, D 256, m 32
    python benchmarks/bench_search.py --section ivf --quick          # 20k images: a smoke run
    python benchmarks/bench_search.py --section ivf --images 100000  # development size

Question: top-k images by the MAX over their (probed) patches of the ADC inner-product score.

Data: ``bench_search.World`` (clustered, L2-normalised) in D = 256, generated block by block and
never held whole (1M x 30 patches are 30 GB of float32). One pass over the blocks feeds every
consumer: the exact float ranking of the eval queries (per-image max of q.x, kept as a
(queries x images) float32 array), the coarse assignment (faiss ``IndexFlatIP`` over the shared
centroids: BLAS), our 8-bit and 4-bit PQ codes, both faiss IVF indexes (``add_core`` with the
precomputed assignment, so the 30M-vector assignment is paid once) and, when the build has it,
our IVF. Codes, assignment, ground truths and the faiss indexes are cached in --cache-dir under a
key of every parameter that decides them, so a rerun only times. Our IVF is rebuilt every run
(it is the thing under development): from the cached codes and assignment when the build has
``set_coarse_centroids`` and ``add_codes(lists=)`` (seconds), otherwise from floats, which needs
a second generation pass when the rest is cached.

Shared coarse quantizer: faiss spherical k-means (unit-norm centroids, so the nearest centroid
by L2 and by inner product are the same list: any assignment rule agrees) on a sample of
max(40 x nlist, --train-size) patches, 10 iterations (faiss's IVF default). faiss uses it
through an ``IndexFlatIP`` quantizer (probes by largest q.c); ours gets it through
``set_coarse_centroids`` when the build has it (otherwise ours trains its own: noted).

Engines (k = 10, same data, same nlist and nprobe):
  ours-8 / ours-4      PatchIndex over ProductQuantizer(256, 32, nbits=8 / 4): exhaustive,
                       exact ADC (the 8-bit one is the reference ranking "exh-8")
  ours-ivf8 / ours-ivf4  PatchIndex(..., nlist=N), search(..., nprobe=p)
  faiss-pqfs           IndexPQFastScan (bbs 32) over our 4-bit codes + group-by
  faiss-ivfpq          IndexIVFPQ m=32 x 8 bits, by_residual=True (faiss's default for it)
  faiss-ivfpqfs        IndexIVFPQFastScan m=32 x 4 bits, bbs 32, by_residual=False (faiss's
                       default for the fast-scan IVF: "faster"); built as an IndexIVFPQ with the
                       precomputed assignment, then converted (identical to faiss's own build)
  faiss-ivfpqfs-hnsw   the same IndexIVFPQFastScan (a clone: the same lists) probed through an
                       IndexHNSWFlat(M=32) over the same centroids, efSearch = max(32, nprobe):
                       faiss's recommended coarse quantizer for large nlist ("IVFn_HNSW32").
                       Beyond the issue's named peers; the checks report it separately
Every faiss engine over-fetches k' patches and groups them by image (``peers.group_by_image``).
k' is the SMALLEST exact one for the run: the top-k images by max are the first k distinct
images in the patch list sorted by score, so a query needs k' = the rank of the first patch of
its k-th distinct image (read off a k x P = 300 fetch, which always suffices). The run's k' is
the maximum of that over every query of the run (eval and latency queries), per engine and
nprobe: tuned on the very queries it is timed on, which favours faiss.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
from pathlib import Path

import numpy as np

import common
import peers

VERSION = 1  # bump when the cached content changes meaning


# ----------------------------------------------------------------------------- ours: probe
def ours_ivf_status():
    """(available, why): does this build's PatchIndex take ``nlist``?"""
    try:
        import pypatch
    except Exception as e:  # noqa: BLE001
        return False, f"pypatch unavailable ({type(e).__name__}: {e})"
    try:
        params = inspect.signature(pypatch.PatchIndex.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    if "nlist" not in params:
        try:  # a signature that hides it (e.g. **kwargs): ask the constructor
            pypatch.PatchIndex(8, pq=pypatch.ProductQuantizer(8, 2), nlist=2)
        except TypeError:
            return False, "PatchIndex takes no nlist"
        except Exception:  # noqa: BLE001 (it took nlist and complained about something else)
            pass
    return True, ""


def default_nlist(n_patches):
    """About 7.3k patches per list, as nlist = 4096 gives at 1M x 30 (a power of two, >= 16)."""
    return int(max(16, 2 ** round(math.log2(max(1.0, n_patches / 7324)))))


# ------------------------------------------------------------------------------------ data
def _key(args):
    return hashlib.sha1(repr((VERSION, args.images, args.patches, args.dim, args.ivf_m, args.nlist,
                              args.seed, args.train_size, args.pq_iters,
                              args.eval_queries, args.n_lat, args.k)).encode()).hexdigest()[:12]


def _sample(world, n, images):
    from bench_search import BLOCK
    n_img = min(images, -(-n // world.P))
    blocks = [world.block(b, images) for b in range(-(-n_img // BLOCK))]
    return np.concatenate(blocks)[:n]


def _topk_rows(best, k):
    """Top-k columns per row, score desc then column asc (the oracle's tie rule)."""
    kk = min(best.shape[1], max(4 * k, 64))
    part = np.argpartition(-best, kk - 1, axis=1)[:, :kk]
    out = np.empty((best.shape[0], k), dtype=np.int64)
    for r in range(best.shape[0]):
        c = part[r]
        order = np.lexsort((c, -best[r, c]))[:k]
        out[r] = c[order]
    return out


def _faiss_ivf(faiss, dim, C, m, nbits, by_residual, pq_sample, args):
    quant = faiss.IndexFlatIP(dim)
    quant.add(C)
    ix = faiss.IndexIVFPQ(quant, dim, len(C), m, nbits, faiss.METRIC_INNER_PRODUCT)
    ix.referenced_objects = [quant]  # keep the quantizer alive with the index (python side)
    ix.by_residual = by_residual
    ix.pq.cp.niter = args.pq_iters
    ix.pq.cp.seed = args.seed
    ix.train(pq_sample)  # quantizer already holds nlist centroids: only the PQ trains
    return ix


def prepare(args, log, ours_ivf_factory=None, by_codes=False):
    """Everything but the timing: cached codes/indexes/ground truths, and our IVF indexes
    (built by ``ours_ivf_factory(sample, pq_sample, C, pq_centroids)`` when given)."""
    import faiss
    import pypatch
    from bench_search import World

    world = World(args.dim, args.patches, args.seed)
    P, m, n_img = args.patches, args.ivf_m, args.images
    n_patches = n_img * P
    cdir = Path(args.cache_dir or "/tmp/pypatch-bench-cache") / f"ivf_{_key(args)}"
    cached = (cdir / "meta.json").exists()
    n_coarse = min(n_patches, max(40 * args.nlist, args.train_size))
    t0 = time.perf_counter()
    sample = _sample(world, n_coarse, n_img)
    pq_sample = sample[:args.train_size]
    log(f"  sample of {len(sample)} patches generated in {time.perf_counter() - t0:.1f}s")
    d = {"cache": cdir, "world": world}
    if cached:
        meta = json.loads((cdir / "meta.json").read_text())
        log(f"  data from cache {cdir}")
        for name in ("C", "pq8", "pq4", "q_eval", "q_lat", "gt_float", "gt_adc8"):
            d[name] = np.load(cdir / f"{name}.npy")
        for name in ("codes8", "codes4"):
            d[name] = np.load(cdir / f"{name}.npy", mmap_mode="r")
        d["faiss-ivfpq"] = faiss.read_index(str(cdir / "ivfpq.faiss"))
        d["faiss-ivfpqfs"] = faiss.read_index(str(cdir / "ivfpqfs.faiss"))
        d["build"] = meta["build"]
    else:
        cdir.mkdir(parents=True, exist_ok=True)
        build = {}
        d["q_eval"] = world.queries(pq_sample, args.eval_queries, 1)
        d["q_lat"] = world.queries(pq_sample, args.n_lat, 2)
        t0 = time.perf_counter()
        km = faiss.Kmeans(args.dim, args.nlist, niter=10, seed=args.seed, spherical=True,
                          max_points_per_centroid=max(256, -(-len(sample) // args.nlist)))
        km.train(sample)
        d["C"] = np.ascontiguousarray(km.centroids, dtype=np.float32)
        build["coarse_kmeans_s"] = time.perf_counter() - t0
        log(f"  coarse k-means nlist={args.nlist} on {len(sample)} in {build['coarse_kmeans_s']:.1f}s")
        pqs = {}
        for nb in (8, 4):
            t0 = time.perf_counter()
            pqs[nb] = pypatch.ProductQuantizer(args.dim, m, nbits=nb).train(
                pq_sample, iters=args.pq_iters, seed=args.seed)
            build[f"ours-{nb}_train_s"] = time.perf_counter() - t0
            d[f"pq{nb}"] = np.ascontiguousarray(pqs[nb].centroids)
        fs_default = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(args.dim), args.dim, args.nlist, m, 4,
                                              faiss.METRIC_INNER_PRODUCT).by_residual
        t0 = time.perf_counter()
        fivf = _faiss_ivf(faiss, args.dim, d["C"], m, 8, True, pq_sample, args)
        build["faiss-ivfpq_train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ffs = _faiss_ivf(faiss, args.dim, d["C"], m, 4, bool(fs_default), pq_sample, args)
        build["faiss-ivfpqfs_train_s"] = time.perf_counter() - t0
        build["faiss-ivfpqfs_by_residual"] = bool(fs_default)
        log(f"  PQ training (ours 8/4-bit, faiss IVFPQ 8/4-bit): " + ", ".join(
            f"{k} {v:.1f}s" for k, v in build.items() if k.endswith("train_s")))
        from numpy.lib.format import open_memmap
        codes8 = open_memmap(cdir / "codes8.npy.part", "w+", np.uint8, (n_patches, m))
        codes4 = open_memmap(cdir / "codes4.npy.part", "w+", np.uint8, (n_patches, m))
        best = np.full((args.eval_queries, n_img), -np.inf, dtype=np.float32)
        assigner = faiss.IndexFlatIP(args.dim)
        assigner.add(d["C"])
        d["ours_ivf"] = (ours_ivf_factory(sample, pq_sample, d["C"], {8: d["pq8"], 4: d["pq4"]})
                         if ours_ivf_factory and not by_codes else {})
        tt = {k: 0.0 for k in ("generate", "exact", "assign", "ours-8", "ours-4", "faiss-ivfpq",
                                "faiss-ivfpqfs", *d["ours_ivf"])}
        t_pass = time.perf_counter()
        for b, x, s0, s1, i0 in _blocks(world, n_img, tt):
            t = time.perf_counter()
            best[:, i0:i0 + (s1 - s0) // P] = (x @ d["q_eval"].T).reshape(-1, P, len(d["q_eval"])).max(1).T
            t1 = time.perf_counter(); tt["exact"] += t1 - t
            a = assigner.search(x, 1)[1].ravel()
            t2 = time.perf_counter(); tt["assign"] += t2 - t1
            codes8[s0:s1] = pqs[8].encode(x)
            t3 = time.perf_counter(); tt["ours-8"] += t3 - t2
            codes4[s0:s1] = pqs[4].encode(x)
            t4 = time.perf_counter(); tt["ours-4"] += t4 - t3
            fivf.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(a))
            t5 = time.perf_counter(); tt["faiss-ivfpq"] += t5 - t4
            ffs.add_core(len(x), faiss.swig_ptr(x), None, faiss.swig_ptr(a))
            t6 = time.perf_counter(); tt["faiss-ivfpqfs"] += t6 - t5
            _add_ours(d["ours_ivf"], x, P, tt)
            if b % 100 == 99:
                log(f"    {s1}/{n_patches} patches, {time.perf_counter() - t_pass:.0f}s: " +
                    ", ".join(f"{k} {v:.0f}s" for k, v in tt.items()))
        t0 = time.perf_counter()
        ffs_scan = faiss.IndexIVFPQFastScan(ffs, 32)
        tt["faiss-ivfpqfs"] += time.perf_counter() - t0
        del ffs
        log(f"  one pass over {n_patches} patches in {time.perf_counter() - t_pass:.0f}s: " +
            ", ".join(f"{k} {v:.1f}s" for k, v in tt.items()))
        build["assign_s"] = tt["assign"]
        for name in ("ours-8", "ours-4", "faiss-ivfpq", "faiss-ivfpqfs"):
            build[f"{name}_add_s"] = tt[name]
        for name in d["ours_ivf"]:
            d["ours_ivf"][name]["add_s"] = tt[name]
        d["gt_float"] = _topk_rows(best, args.k)
        del best
        codes8.flush(); codes4.flush()
        del codes8, codes4
        for name in ("codes8", "codes4"):
            os.replace(cdir / f"{name}.npy.part", cdir / f"{name}.npy")
            d[name] = np.load(cdir / f"{name}.npy", mmap_mode="r")
        # the exhaustive 8-bit ADC ranking: ours exhaustive (exact ADC, tested against numpy)
        ix8 = pypatch.PatchIndex(args.dim, pypatch.ProductQuantizer.from_centroids(d["pq8"]))
        ix8.add_codes(d["codes8"], patches_per_image=P)
        d["gt_adc8"] = ix8.search(d["q_eval"], k=args.k, num_threads=2)[1]
        del ix8
        d["faiss-ivfpq"], d["faiss-ivfpqfs"] = fivf, ffs_scan
        faiss.write_index(fivf, str(cdir / "ivfpq.faiss"))
        faiss.write_index(ffs_scan, str(cdir / "ivfpqfs.faiss"))
        for name in ("C", "pq8", "pq4", "q_eval", "q_lat", "gt_float", "gt_adc8"):
            np.save(cdir / f"{name}.npy", d[name])
        d["build"] = build
        (cdir / "meta.json").write_text(json.dumps({"build": build, "args": {
            k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, list, type(None)))}}))
    if ours_ivf_factory is not None and by_codes:
        # our IVF from the cached codes and the shared assignment (add_codes(lists=)): its codes are
        # the exhaustive ones (PQ on raw vectors) and its lists are faiss's, so no float pass
        assign = _assignment(d, n_patches)
        d["ours_ivf"] = ours_ivf_factory(sample, pq_sample, d["C"], {8: d["pq8"], 4: d["pq4"]})
        for nb, (name, e) in zip((8, 4), d["ours_ivf"].items()):
            t0 = time.perf_counter()
            e["index"].add_codes(d[f"codes{nb}"], patches_per_image=P, lists=assign)
            t_add = time.perf_counter() - t0
            # + the PQ training and encoding its codes cost (shared with the exhaustive engine)
            e["add_s"] = t_add + d["build"][f"ours-{nb}_add_s"]
            e["train_s"] += d["build"][f"ours-{nb}_train_s"]
            log(f"  {name}: add_codes(lists=) of {n_patches} patches in {t_add:.1f}s")
    elif cached and ours_ivf_factory is not None:
        d["ours_ivf"] = ours_ivf_factory(sample, pq_sample, d["C"], {8: d["pq8"], 4: d["pq4"]})
        if d["ours_ivf"]:
            tt = {"generate": 0.0, **{k: 0.0 for k in d["ours_ivf"]}}
            t_pass = time.perf_counter()
            for b, x, s0, s1, i0 in _blocks(world, n_img, tt):
                _add_ours(d["ours_ivf"], x, P, tt)
                if b % 100 == 99:
                    log(f"    ours IVF: {s1}/{n_patches} patches, {time.perf_counter() - t_pass:.0f}s")
            log("  ours IVF pass: " + ", ".join(f"{k} {v:.1f}s" for k, v in tt.items()))
            for name in d["ours_ivf"]:
                d["ours_ivf"][name]["add_s"] = tt[name]
    d.setdefault("ours_ivf", {})
    return d


def _assignment(d, n_patches):
    """Each patch's list, read off the faiss IVFPQ's inverted lists (ids = patch numbers); it was
    added with the shared assignment, so this is that assignment. Cached as assign.npy."""
    import faiss
    path = d["cache"] / "assign.npy"
    if path.exists():
        return np.load(path)
    ix = d["faiss-ivfpq"]
    inv = ix.invlists
    out = np.full(n_patches, -1, dtype=np.int32)
    for lst in range(ix.nlist):
        n = inv.list_size(lst)
        if n:
            out[faiss.rev_swig_ptr(inv.get_ids(lst), n)] = lst
    if (out < 0).any():
        raise RuntimeError("faiss IVFPQ does not hold every patch once")
    np.save(path, out)
    return out


def _blocks(world, n_img, tt):
    from bench_search import BLOCK
    P = world.P
    for b in range((n_img + BLOCK - 1) // BLOCK):
        t = time.perf_counter()
        x = world.block(b, n_img)
        tt["generate"] += time.perf_counter() - t
        s0 = b * BLOCK * P
        yield b, x, s0, s0 + len(x), b * BLOCK


def _add_ours(ours, x, P, tt):
    for name, e in ours.items():
        t = time.perf_counter()
        e["index"].add(x, patches_per_image=P, num_threads=2)
        tt[name] += time.perf_counter() - t


def make_ours_ivf_factory(args, log):
    """Our IVF indexes (8- and 4-bit), trained, empty: {name: {"index", "train_s", "shared"}}.

    --ours-ivf-pq shared (default): the PQ is the exhaustive engines' trained one
    (``ProductQuantizer.from_centroids``), so ``train`` fits the coarse quantizer only and, for
    PQ on raw vectors, full probing reproduces the exhaustive 8-bit ranking; own: a fresh
    ``ProductQuantizer`` that ``train`` fits itself (e.g. on residuals)."""
    import pypatch

    def factory(sample, pq_sample, C, pq_centroids):
        out = {}
        for nb in (8, 4):
            pq = (pypatch.ProductQuantizer.from_centroids(pq_centroids[nb]) if args.ours_ivf_pq == "shared"
                  else pypatch.ProductQuantizer(args.dim, args.ivf_m, nbits=nb))
            ix = pypatch.PatchIndex(args.dim, pq=pq, nlist=args.nlist)
            shared = hasattr(ix, "set_coarse_centroids")
            t0 = time.perf_counter()
            if shared:
                ix.set_coarse_centroids(C)
            ix.train(sample, iters=args.pq_iters, seed=args.seed, num_threads=2)
            out[f"ours-ivf{nb}"] = {"index": ix, "train_s": time.perf_counter() - t0, "shared": shared}
            log(f"  ours IVF {nb}-bit ({args.ours_ivf_pq} PQ) trained in {out[f'ours-ivf{nb}']['train_s']:.1f}s "
                f"({'shared coarse centroids' if shared else 'its own coarse quantizer: no set_coarse_centroids'})")
        return out
    return factory


# ------------------------------------------------------------------------------- measuring
def recall(found, truth):
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(found, truth)]))


def min_exact_kprime(I, P, k):
    """Per row: the smallest k' whose prefix holds k distinct images (all valid hits if fewer)."""
    out = np.empty(len(I), dtype=np.int64)
    for r, row in enumerate(I):
        row = row[row >= 0]
        _, first = np.unique(row // P, return_index=True)
        first.sort()
        out[r] = first[k - 1] + 1 if len(first) >= k else max(len(row), 1)
    return out


def _faiss_bytes(index):
    """Bytes held per patch by a faiss IVF index: codes (block-padded for fast scan) + int64 ids
    + coarse centroids; IndexPQFastScan: codes (padded to blocks of 32)."""
    import faiss
    if isinstance(index, faiss.IndexIVF):
        inv = index.invlists
        sizes = np.array([inv.list_size(i) for i in range(index.nlist)], dtype=np.int64)
        if isinstance(index, faiss.IndexIVFFastScan):
            codes = int((-(-sizes // index.bbs)).sum()) * index.bbs * index.M2 // 2
        else:
            codes = int(sizes.sum()) * index.code_size
        return (codes + int(sizes.sum()) * 8 + index.nlist * index.d * 4) / index.ntotal
    return index.ntotal and -(-index.ntotal // index.bbs) * index.bbs * index.M2 // 2 / index.ntotal


_PER_PATCH = ("codes", "ivf_ids", "vectors")  # what grows with the patches (codes block-padded)


def _ours_bytes(ix):
    mu = {k: v for k, v in ix.memory_usage().items() if isinstance(v, int)}
    return mu["total"] / ix.num_patches, mu


def run(args, out, writer):
    import faiss
    import pypatch

    log = lambda s: out(s, flush=True)  # noqa: E731
    P, k, m = args.patches, args.k, args.ivf_m
    have_ivf, why = ours_ivf_status()
    if not have_ivf:
        log(f"ours: IVF not available in this build ({why})")
    t_all = time.perf_counter()
    by_codes = have_ivf and args.ours_ivf_pq == "shared" and _ours_takes_lists()
    if have_ivf:
        log(f"  ours IVF built by {'add_codes(codes, lists=shared assignment)' if by_codes else 'add(float blocks)'}")
    d = prepare(args, log, make_ours_ivf_factory(args, log) if have_ivf else None, by_codes)
    n_patches = args.images * P
    offsets = peers.constant_offsets(args.images, P)
    q_eval, q_lat = d["q_eval"], d["q_lat"]
    q_all = np.concatenate([q_eval, q_lat])

    # ---- engines: name -> dict(fn(qs, threads), nprobe, kprime, bytes, build_s, family)
    cfgs = {}
    t0 = time.perf_counter()
    ours = {}
    for nb in (8, 4):
        ix = pypatch.PatchIndex(args.dim, pypatch.ProductQuantizer.from_centroids(d[f"pq{nb}"]))
        ix.add_codes(d[f"codes{nb}"], patches_per_image=P)
        ours[nb] = ix
        cfgs[f"ours-{nb}"] = dict(
            engine=f"ours-{nb}", family="ours-exh", nprobe=None, kprime=None, fn=_ours_fn(ix, k, None),
            bytes=_ours_bytes(ix)[0],
            build_s=d["build"][f"ours-{nb}_train_s"] + d["build"][f"ours-{nb}_add_s"])
    log(f"  ours exhaustive indexes loaded in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    fz = peers.FaissFastScanGroupBy(args.dim, m, d["pq4"])
    fz.add_codes(d["codes4"], offsets)
    t_fz = time.perf_counter() - t0
    cfgs["faiss-pqfs"] = dict(engine="faiss-pqfs", family="faiss-exh", nprobe=None, index=fz.index,
                              bytes=_faiss_bytes(fz.index), build_s=d["build"]["ours-4_train_s"] +
                              d["build"]["ours-4_add_s"] + t_fz)
    for name in ("faiss-ivfpq", "faiss-ivfpqfs"):
        ix = d[name]
        b = _faiss_bytes(ix)
        for p in args.nprobe:
            if p <= args.nlist:
                cfgs[f"{name}/{p}"] = dict(engine=name, family="faiss-ivf", nprobe=p, index=ix, bytes=b,
                                           build_s=d["build"][f"{name}_train_s"] + d["build"][f"{name}_add_s"])
    # faiss's HNSW coarse quantizer over the same centroids, on a clone of the fast-scan IVF
    t0 = time.perf_counter()
    hq = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
    hq.add(np.ascontiguousarray(d["C"], dtype=np.float32))
    fsh = faiss.clone_index(d["faiss-ivfpqfs"])
    fsh.quantizer = hq  # hq stays referenced by cfgs (and the clone must not free it)
    fsh.own_fields = False
    t_hnsw = time.perf_counter() - t0
    for p in args.nprobe:
        if p <= args.nlist:
            cfgs[f"faiss-ivfpqfs-hnsw/{p}"] = dict(
                engine="faiss-ivfpqfs-hnsw", family="faiss-ivf-hnsw", nprobe=p, index=fsh, hnsw=hq,
                bytes=_faiss_bytes(d["faiss-ivfpqfs"]) + hq.ntotal * (args.dim * 4 + 32 * 2 * 4) /
                (args.images * P), build_s=d["build"]["faiss-ivfpqfs_train_s"] +
                d["build"]["faiss-ivfpqfs_add_s"] + t_hnsw)
    for name, e in d["ours_ivf"].items():
        b, mu = _ours_bytes(e["index"])
        per_patch = sum(mu.get(key, 0) for key in _PER_PATCH) / e["index"].num_patches
        for p in args.nprobe:
            if p <= args.nlist:
                cfgs[f"{name}/{p}"] = dict(engine=name, family="ours-ivf", nprobe=p, kprime=None,
                                           fn=_ours_fn(e["index"], k, p), bytes=b,
                                           build_s=e["train_s"] + e["add_s"], shared=e["shared"],
                                           built="add_codes(lists=)" if by_codes else "add(floats)",
                                           memory=mu, per_patch_bytes=per_patch)
    # smallest exact over-fetch per faiss config, over every query of the run
    for c in cfgs.values():
        if "index" in c:
            if c["nprobe"] is not None:
                c["index"].nprobe = c["nprobe"]
            if c.get("hnsw") is not None:
                c["hnsw"].hnsw.efSearch = _ef_search(c["nprobe"])
            faiss.omp_set_num_threads(2)
            _, I = c["index"].search(q_all, k * P)
            kp = min_exact_kprime(I, P, k)
            c["kprime"], c["kprime_median"] = int(kp.max()), float(np.median(kp))
            c["fn"] = _faiss_fn(faiss, c["index"], c["nprobe"], c["kprime"], offsets, k, c.get("hnsw"))
    # quality: vs the exact float ranking, vs exhaustive 8-bit ADC (ours-8), and vs the engine's
    # own answer with every list probed (what the probing alone loses; 1 for exhaustive engines)
    own_all = {}
    for c in cfgs.values():
        if c["family"] == "ours-ivf" and c["engine"] not in own_all:
            own_all[c["engine"]] = _ours_fn(d["ours_ivf"][c["engine"]]["index"], k, args.nlist)(q_eval, 2)[1]
        elif c["family"].startswith("faiss-ivf") and c["engine"] not in own_all:
            c["index"].nprobe = args.nlist  # k x P is exact for any probe set
            own_all[c["engine"]] = _faiss_fn(faiss, c["index"], args.nlist, k * P, offsets, k,
                                             c.get("hnsw"))(q_eval, 2)[1]
    for name, c in cfgs.items():
        imgs = c["fn"](q_eval, 2)[1]
        c["recall_float"] = recall(imgs, d["gt_float"])
        c["recall_adc8"] = recall(imgs, d["gt_adc8"])
        c["recall_own"] = recall(imgs, own_all[c["engine"]]) if c["engine"] in own_all else 1.0
    log(f"  recall@{k} (vs exact float / vs exhaustive 8-bit ADC / vs own all-lists): " + ", ".join(
        f"{n} {c['recall_float']:.3f}/{c['recall_adc8']:.3f}/{c['recall_own']:.3f}" for n, c in cfgs.items()))

    # latency: in rounds; each round times every config on all its calls in a row (after one
    # warm-up call), so a sub-millisecond IVF search is not timed right after a full scan has
    # flushed the caches (call-by-call round robin did that); rounds spread the load over all
    rounds = max(1, min(args.rounds, 3))
    singles = [q_lat[i:i + 1] for i in range(min(args.queries, len(q_lat)))]
    for t in args.threads:
        for name, tm in measure_rounds({n: c["fn"] for n, c in cfgs.items()}, singles, t, rounds).items():
            cfgs[name][f"t{t}_ms"] = tm.p50 * 1e3
            cfgs[name][f"t{t}_p95_ms"] = tm.p95 * 1e3
        log(f"  single queries at {t} thread(s) timed ({len(singles)} queries x {rounds} rounds)")
    tb = max(args.threads)
    batches = [q_lat[i:i + args.batch] for i in range(0, len(q_lat) - args.batch + 1, args.batch)]
    for name, tm in measure_rounds({n: c["fn"] for n, c in cfgs.items()}, batches, tb, rounds).items():
        cfgs[name]["batch_ms"] = tm.p50 * 1e3 / args.batch
    log(f"  batches of {args.batch} at {tb} threads timed ({len(batches)} batches x {rounds} rounds)")

    # what the group-by adds to every faiss row: a single query's k' fetch, grouped alone
    fs1 = next((c for c in cfgs.values() if c["engine"] == "faiss-ivfpqfs"), None)
    if fs1 is not None:
        fs1["index"].nprobe = fs1["nprobe"]
        D1, I1 = fs1["index"].search(q_lat[:1], fs1["kprime"])
        ts = []
        for _ in range(200):
            t0 = time.perf_counter()
            peers.group_by_image(D1, I1, offsets, k)
            ts.append(time.perf_counter() - t0)
        log(f"  group-by alone (numpy, one query, k'={fs1['kprime']}): {np.median(ts) * 1e3:.3f} ms, "
            f"inside every faiss row's time")

    rows = [{kk: v for kk, v in c.items() if kk not in ("fn", "index", "hnsw")} | {"config": n}
            for n, c in cfgs.items()]
    for r in rows:
        writer.write({"kind": "ivf", **r, "images": args.images, "patches": P, "dim": args.dim, "m": m,
                      "nlist": args.nlist, "k": k, "load": os.getloadavg()[0], "build_shared": d["build"]})
    report(rows, args, d, have_ivf, out)
    plot(rows, args, out)
    out(f"# IVF section total {time.perf_counter() - t_all:.0f}s, peak RSS "
        f"{common.fmt_bytes(common.peak_rss_bytes())}; cache {d['cache']}")
    return 0


def measure_rounds(fns, calls, threads, rounds):
    """{name: Timing of one call} over ``rounds`` rounds; in each, every fn runs one warm-up
    call then all ``calls`` in a row, each timed."""
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn(calls[0], threads)
            for qs in calls:
                t0 = time.perf_counter()
                fn(qs, threads)
                samples[name].append(time.perf_counter() - t0)
    return {name: common.Timing(np.asarray(v)) for name, v in samples.items()}


def _ours_takes_lists():
    import pypatch
    try:
        ok = "lists" in inspect.signature(pypatch.PatchIndex.add_codes).parameters
    except (TypeError, ValueError):
        return False
    return ok and hasattr(pypatch.PatchIndex, "set_coarse_centroids")


def _ours_fn(ix, k, nprobe):
    if nprobe is None:
        return lambda x, t: ix.search(x, k=k, num_threads=t)
    return lambda x, t: ix.search(x, k=k, num_threads=t, nprobe=nprobe)


def _ef_search(nprobe):
    return max(32, nprobe)


def _faiss_fn(faiss, index, nprobe, kprime, offsets, k, hnsw=None):
    def fn(x, t):
        faiss.omp_set_num_threads(t)
        if nprobe is not None:
            index.nprobe = nprobe  # configs share an index: set it on every call
        if hnsw is not None:
            hnsw.hnsw.efSearch = _ef_search(nprobe)
        D, I = index.search(x, kprime)
        return peers.group_by_image(D, I, offsets, k)
    return fn


# ------------------------------------------------------------------------------- reporting
def _best_faiss(rows, rec, key="recall_float", ivf_only=False, fam=None):
    """The fastest (1 thread) faiss config whose ``key`` recall is at least ``rec``."""
    fam = fam or (("faiss-ivf",) if ivf_only else ("faiss-ivf", "faiss-ivf-hnsw", "faiss-exh"))
    ok = [r for r in rows if r["family"] in fam and r[key] >= rec - 1e-9]
    return min(ok, key=lambda r: r["t1_ms"]) if ok else None


def report(rows, args, d, have_ivf, out):
    t_list = args.threads
    head = ["engine", "nprobe", "k'", "rec exact", "rec exh-8", "rec own-all", *[f"{t}t ms" for t in t_list],
            f"b{args.batch} ms/q", "B/patch", "build s", "best faiss at >= rec exact: its 1t ms / this"]
    out("")
    out("| " + " | ".join(head) + " |")
    out("|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|")
    for r in rows:
        bf = _best_faiss(rows, r["recall_float"])
        ratio = f"{bf['t1_ms'] / r['t1_ms']:.2f}x ({bf['config']})" if bf else "- (none reaches it)"
        kp = "-" if r["kprime"] is None else f"{r['kprime']} (med {r['kprime_median']:.0f})"
        out(f"| {r['engine']} | {r['nprobe'] or '-'} | {kp} | {r['recall_float']:.3f} | {r['recall_adc8']:.3f} | "
            f"{r['recall_own']:.3f} | " + " | ".join(f"{r[f't{t}_ms']:.3f}" for t in t_list)
            + f" | {r['batch_ms']:.3f} | {r['bytes']:.1f} | {r['build_s']:.0f} | {ratio} |")
    b = d["build"]
    out("")
    out(f"shared build work (not in the rows' build s): coarse k-means {b['coarse_kmeans_s']:.0f}s, "
        f"assignment of {args.images * args.patches} patches (faiss IndexFlatIP, BLAS) {b['assign_s']:.0f}s; "
        f"faiss IVFPQFastScan by_residual={b['faiss-ivfpqfs_by_residual']}, IVFPQ by_residual=True")
    checks(rows, args, have_ivf, out)
    projection(rows, args, out)


def checks(rows, args, have_ivf, out):
    exh8 = next(r for r in rows if r["engine"] == "ours-8")
    out("")
    # the peers, for reference: their fastest setting that loses <= 5 % to their own full probe
    for eng in ("faiss-ivfpq", "faiss-ivfpqfs"):
        ok = [r for r in rows if r["engine"] == eng and r["recall_own"] >= 0.95]
        if ok:
            r = min(ok, key=lambda r: r["t1_ms"])
            out(f"INFO  {r['config']}: recall {r['recall_own']:.3f} vs its own all-lists answer, "
                f"{r['recall_adc8']:.3f} vs exhaustive 8-bit, {r['recall_float']:.3f} vs exact, at {r['t1_ms']:.3f} ms "
                f"= 1/{exh8['t1_ms'] / r['t1_ms']:.0f} of ours-8 exhaustive ({exh8['t1_ms']:.1f} ms)")
    if not have_ivf:
        out("SKIP  IVF targets: ours: IVF not available in this build")
        return
    ivf = [r for r in rows if r["family"] == "ours-ivf"]
    good = [r for r in ivf if r["recall_adc8"] >= 0.95]
    if not good:
        out("FAIL  no ours IVF setting reaches recall@10 >= 0.95 vs exhaustive 8-bit")
    else:
        best = min(good, key=lambda r: r["t1_ms"])
        frac = best["t1_ms"] / exh8["t1_ms"]
        out(f"{'PASS' if frac <= 1 / 20 else 'FAIL'}  {best['config']}: recall {best['recall_adc8']:.3f} vs "
            f"exhaustive 8-bit at {best['t1_ms']:.3f} ms = 1/{1 / frac:.0f} of its {exh8['t1_ms']:.1f} ms "
            f"(>= 0.95 at <= 1/20)")
        bf = _best_faiss(rows, best["recall_float"], ivf_only=True)
        note = ""
        if bf is None:  # faiss's own codes top out lower: compare with its most accurate setting
            fi = [r for r in rows if r["family"] == "faiss-ivf"]
            top = max(r["recall_float"] for r in fi)
            bf = min((r for r in fi if r["recall_float"] >= top - 1e-9), key=lambda r: r["t1_ms"])
            note = f"; no faiss IVF setting reaches {best['recall_float']:.3f}, its best is {top:.3f}"
        sp = bf["t1_ms"] / best["t1_ms"]
        out(f"{'PASS' if sp >= 1.5 else 'FAIL'}  {sp:.2f}x faster than the best faiss IVF + group-by at >= its "
            f"recall vs exact ({bf['config']}, {bf['t1_ms']:.3f} ms, {bf['recall_float']:.3f} vs "
            f"{best['recall_float']:.3f}{note}) (>= 1.5x)")
        # beyond the peers: faiss with its HNSW coarse quantizer
        bh = _best_faiss(rows, best["recall_float"], fam=("faiss-ivf-hnsw",))
        if bh is not None:
            out(f"INFO  vs faiss with an HNSW coarse quantizer at >= its recall vs exact: {bh['config']} "
                f"{bh['t1_ms']:.3f} ms, {bh['t1_ms'] / best['t1_ms']:.2f}x")
    # the same comparison on what probing alone loses: both at >= 0.95 of their own full probe
    o95 = [r for r in ivf if r["recall_own"] >= 0.95]
    for fam, tag in (("faiss-ivf", None), ("faiss-ivf-hnsw", "INFO")):
        f95 = [r for r in rows if r["family"] == fam and r["recall_own"] >= 0.95]
        if o95 and f95:
            o, f = min(o95, key=lambda r: r["t1_ms"]), min(f95, key=lambda r: r["t1_ms"])
            sp = f["t1_ms"] / o["t1_ms"]
            out(f"{tag or ('PASS' if sp >= 1.5 else 'FAIL')}  at >= 0.95 of their own all-lists answers: "
                f"{o['config']} {o['t1_ms']:.3f} ms vs {f['config']} {f['t1_ms']:.3f} ms: {sp:.2f}x"
                + (" (>= 1.5x)" if tag is None else " (HNSW coarse quantizer, beyond the issue's peers)"))
    r4 = next((r for r in ivf if r["engine"] == "ours-ivf4"), None)
    if r4 is not None:
        lim = args.ivf_m / 2 + 5
        n = args.images * args.patches
        parts = ", ".join(f"{k} {v / n:.2f}" for k, v in r4["memory"].items()
                          if v and k not in ("total", "mapped"))
        out(f"{'PASS' if r4['per_patch_bytes'] <= lim else 'FAIL'}  ours IVF 4-bit m={args.ivf_m}: "
            f"{r4['per_patch_bytes']:.2f} B/patch of codes (block-padded) + ids (<= {lim:.0f}: "
            f"{args.ivf_m // 2} B code + 5 B ids); {r4['bytes']:.2f} B/patch all told (per patch: {parts})")


def projection(rows, args, out):
    """10M images at the same nlist and nprobe, from the measured scaling.

    IVF: a least-squares fit over the nprobe sweep, t1 = a + b x nprobe (a: coarse quantizer,
    tables, top-k; b: the scan of one list of this size), then t(10M) = a + f x b x nprobe with
    f = 10M / measured images (the lists hold f times the patches). Exhaustive: t x f. Bytes x f.
    Shown per engine at its fastest setting that keeps >= 0.95 of its own all-lists answer
    (recall at 10M with lists f times longer is assumed unchanged: an assumption, not a measure)."""
    f = 10_000_000 / args.images
    out("")
    out(f"PROJECTION (not measured) to 10M images x {args.patches} patches, same nlist ({args.nlist}) and "
        f"nprobe; f = {f:.3g}")
    out("| engine | nprobe | rec own-all | fit a ms | fit b ms/list | 1t ms measured | 1t ms projected | "
        "index GB projected |")
    out("|---|--:|--:|--:|--:|--:|--:|--:|")
    for eng in dict.fromkeys(r["engine"] for r in rows):
        er = [r for r in rows if r["engine"] == eng]
        rs = [r for r in er if r["recall_own"] >= 0.95]
        if not rs:
            continue
        r = min(rs, key=lambda r: r["t1_ms"])
        if r["nprobe"] is None:
            a, b, proj = None, None, r["t1_ms"] * f
        else:
            x = np.array([e["nprobe"] for e in er], dtype=np.float64)
            y = np.array([e["t1_ms"] for e in er], dtype=np.float64)
            b, a = np.polyfit(x, y, 1) if len(er) > 1 else (y[0] / x[0], 0.0)
            a, b = max(a, 0.0), max(b, 0.0)
            proj = a + f * b * r["nprobe"]
        out(f"| {eng} | {r['nprobe'] or '-'} | {r['recall_own']:.3f} | {'-' if a is None else f'{a:.3f}'} | "
            f"{'-' if b is None else f'{b:.4f}'} | {r['t1_ms']:.3f} | {proj:.1f} | "
            f"{r['bytes'] * args.patches * 10_000_000 / 1e9:.1f} |")


def plot(rows, args, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        out("  (matplotlib missing: no plot)")
        return
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, key, what in ((axes[0], "recall_own", "own all-lists answer"),
                          (axes[1], "recall_adc8", "exhaustive 8-bit ADC"), (axes[2], "recall_float", "exact float")):
        for eng in dict.fromkeys(r["engine"] for r in rows):
            rs = sorted((r for r in rows if r["engine"] == eng), key=lambda r: r["nprobe"] or 0)
            ax.plot([r["t1_ms"] for r in rs], [r[key] for r in rs], "o-" if len(rs) > 1 else "s",
                    label=eng, markersize=5)
            for r in rs:
                if r["nprobe"]:
                    ax.annotate(str(r["nprobe"]), (r["t1_ms"], r[key]), fontsize=6,
                                xytext=(2, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("latency per query, 1 thread (ms, log)")
        ax.set_ylabel(f"image recall@{args.k} vs {what}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{args.images:,} images x {args.patches} patches, D={args.dim}, m={args.ivf_m}, "
                 f"nlist={args.nlist} (labels: nprobe)")
    fig.tight_layout()
    path = Path(args.plot) if args.plot else Path(__file__).resolve().parent / "ivf_recall_latency.png"
    fig.savefig(path, dpi=110)
    out(f"  plot: {path}")
