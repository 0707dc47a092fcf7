"""An offline instance-retrieval benchmark with true boxes, built from photos shipped by pip
packages, so that it builds anywhere pypatch installs (no download, no network).

What it contains
----------------
* **Sources.** Real photos bundled with scikit-image (astronaut, chelsea, coffee, rocket,
  stereo_motorcycle (left view), hubble_deep_field, immunohistochemistry, retina, camera,
  clock, coins, and the brick/grass/gravel textures as background only), scikit-learn
  (china.jpg, flower.jpg) and matplotlib (grace_hopper.jpg). Each is verified to load offline.
* **Instances.** Distinctive (high-gradient) rectangular regions cut from the photos, at most
  a few per photo and never overlapping each other.
* **Database scenes** (``db/NNNN.jpg``): a background crop of *another* photo, resized to the
  scene size, with 1-3 clutter patches from other photos, then one instance pasted at a random
  position and scale (its box covers 3 % to 40 % of the scene, log-uniform), with mild rotation
  (up to 12 degrees) and perspective, colour jitter and sometimes blur. Some scenes show the
  instance twice (two ground-truth boxes) or a second, different instance. Background and
  clutter crops avoid every instance region of their photo, so there are no unlabelled
  positives. **Distractor scenes** are built the same way without any instance.
* **Queries** (``queries/qNNN.jpg``): each instance re-cut from its source photo under other
  augmentations; every other query is instead a larger context window of the source photo with
  ``box`` marking the instance (the revisitop style of query).
* ``benchmark.json`` in the generic format (see ``pypatch.evaluation.datasets.benchmark``), plus per
  positive ``area_frac`` (the largest box's share of the scene area), ``area_fracs`` (one per
  box) and ``instance``; top level ``instances`` (query id -> instance name) and ``generator``.

Sizes: ``small`` = 12 instances, 12 queries, 100 database images (112 files, a second or two);
``large`` = 40 instances, 80 queries, 1,000 database images; ``xlarge`` = large's plan (40
instances, 80 queries, 640 scenes with an instance) among 5,000 database images. Same seed ->
same bytes (fixed JPEG quality 90 with 4:2:0 subsampling, no timestamps, sorted JSON), for
fixed library versions.
"""
from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError

__all__ = ["make_benchmark", "SIZES"]

GENERATOR_VERSION = 1
JPEG = dict(format="JPEG", quality=90, subsampling=2, optimize=False, progressive=False)


@dataclass(frozen=True)
class _Size:
    instances: int
    scenes_per_instance: int
    distractors: int
    queries_per_instance: int
    scene_side: int  # long side of a database scene


SIZES = {
    "small": _Size(instances=12, scenes_per_instance=5, distractors=40, queries_per_instance=1, scene_side=320),
    "large": _Size(instances=40, scenes_per_instance=16, distractors=360, queries_per_instance=2, scene_side=448),
    # large's plan among 5x the images (more distractors; the collection-size checks of issue 14)
    "xlarge": _Size(instances=40, scenes_per_instance=16, distractors=4360, queries_per_instance=2, scene_side=448),
}
# photos that only serve as background texture (repetitive, no distinctive object)
_BACKGROUND_ONLY = ("brick", "grass", "gravel")


def _load_photos() -> dict[str, np.ndarray]:
    """Bundled photos as RGB uint8, long side capped at 640 px (cheap and deterministic)."""
    from skimage import data as sk

    photos: dict[str, np.ndarray] = {}
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                 "immunohistochemistry", "retina", "camera", "clock", "coins", *_BACKGROUND_ONLY):
        photos[name] = getattr(sk, name)()
    photos["motorcycle"] = sk.stereo_motorcycle()[0]
    # scikit-learn and matplotlib (eval extra) ship photos too; read the files directly,
    # without importing the packages (importing sklearn alone costs about a second)
    for pkg, rel, name in (("sklearn", "datasets/images/china.jpg", "china"),
                           ("sklearn", "datasets/images/flower.jpg", "flower"),
                           ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "grace_hopper")):
        spec = importlib.util.find_spec(pkg)
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / rel
            if path.is_file():
                with Image.open(path) as im:
                    photos[name] = np.asarray(im.convert("RGB"))
    out = {}
    for name, arr in sorted(photos.items()):
        im = Image.fromarray(arr).convert("RGB")
        scale = 640 / max(im.size)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
        out[name] = np.asarray(im)
    return out


def _overlap(a, b) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def _texture_score(gray: np.ndarray, r) -> float:
    g = gray[r[1]:r[3], r[0]:r[2]]
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean() + g.std())


def _pick_instances(photos: dict[str, np.ndarray], n: int, rng: np.random.Generator):
    """Greedy, round-robin over photos: the most textured disjoint windows of each photo."""
    names = [k for k in photos if k not in _BACKGROUND_ONLY]
    per_photo: dict[str, list] = {}
    for name in names:
        arr = photos[name]
        h, w = arr.shape[:2]
        gray = arr.astype(np.float32).mean(axis=2)
        cands = []
        for _ in range(120):
            side = rng.uniform(0.22, 0.34) * min(h, w)
            aspect = rng.uniform(0.75, 1.33)
            cw, ch = int(side * aspect), int(side / aspect)
            x, y = int(rng.integers(0, w - cw)), int(rng.integers(0, h - ch))
            r = (x, y, x + cw, y + ch)
            cands.append((_texture_score(gray, r), r))
        cands.sort(key=lambda t: -t[0])
        chosen: list = []
        for _, r in cands:
            margin = (r[0] - 8, r[1] - 8, r[2] + 8, r[3] + 8)
            if all(_overlap(margin, c) == 0 for c in chosen):
                chosen.append(r)
            if len(chosen) == 4:
                break
        per_photo[name] = chosen
    instances, level = [], 0
    while len(instances) < n:
        added = False
        for name in names:
            if level < len(per_photo[name]) and len(instances) < n:
                instances.append((name, per_photo[name][level]))
                added = True
        if not added:
            raise InvalidArgumentError(f"only {len(instances)} instances available, {n} requested")
        level += 1
    return instances


def _free_crop(photos, forbidden, name: str, aspect: float, rng, min_frac: float) -> Image.Image | None:
    """A crop of photo ``name`` with the given aspect that touches no instance region
    (at most 5 % of any region), or None after a few tries."""
    arr = photos[name]
    h, w = arr.shape[:2]
    for _ in range(40):
        frac = rng.uniform(min_frac, 0.9)
        cw = int(min(w, h * aspect) * frac)
        ch = int(cw / aspect)
        if cw < 16 or ch < 16:
            continue
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        r = (x, y, x + cw, y + ch)
        if all(_overlap(r, f) <= 0.05 * (f[2] - f[0]) * (f[3] - f[1]) for f in forbidden.get(name, [])):
            return Image.fromarray(arr[y:y + ch, x:x + cw])
    return None


def _jitter(im: Image.Image, rng) -> Image.Image:
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.75, 1.25))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.75, 1.25))
    return ImageEnhance.Color(im).enhance(rng.uniform(0.7, 1.3))


def _perspective_coeffs(dst, src) -> list[float]:
    """PIL PERSPECTIVE coefficients mapping output corners ``dst`` to input corners ``src``."""
    a, b = [], []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return np.linalg.solve(np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)).tolist()


def _augment_object(obj: Image.Image, rng, max_angle: float = 12.0, persp: float = 0.08,
                    max_side: int | None = None) -> Image.Image:
    """Colour jitter, mild perspective and rotation; returns RGBA with a transparent outside.
    ``max_side`` first shrinks the object (it will be pasted smaller anyway; saves time)."""
    if max_side is not None and max(obj.size) > max_side:
        f = max_side / max(obj.size)
        obj = obj.resize((max(8, round(obj.width * f)), max(8, round(obj.height * f))), Image.BICUBIC)
    obj = _jitter(obj, rng).convert("RGBA")
    w, h = obj.size
    d = lambda s: float(rng.uniform(0, persp * s))  # noqa: E731
    dst = [(d(w), d(h)), (w - d(w), d(h)), (w - d(w), h - d(h)), (d(w), h - d(h))]
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    obj = obj.transform((w, h), Image.PERSPECTIVE, _perspective_coeffs(dst, src), Image.BICUBIC)
    return obj.rotate(float(rng.uniform(-max_angle, max_angle)), Image.BICUBIC, expand=True)


def _paste(scene: Image.Image, obj: Image.Image, area_frac: float, rng, avoid=()) -> tuple | None:
    """Paste RGBA ``obj`` so that its visible box covers ``area_frac`` of the scene.
    Returns the exclusive box [x0, y0, x1, y1] or None if it cannot avoid ``avoid`` boxes."""
    bbox = obj.getchannel("A").getbbox()
    obj = obj.crop(bbox)
    sw, sh = scene.size
    scale = np.sqrt(area_frac * sw * sh / (obj.width * obj.height))
    nw, nh = max(8, round(obj.width * scale)), max(8, round(obj.height * scale))
    if nw > sw or nh > sh:
        f = min(sw / nw, sh / nh)
        nw, nh = max(8, int(nw * f)), max(8, int(nh * f))
    obj = obj.resize((nw, nh), Image.BICUBIC)
    if rng.random() < 0.3:
        obj = obj.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.2))))
    for _ in range(30):
        x, y = int(rng.integers(0, sw - nw + 1)), int(rng.integers(0, sh - nh + 1))
        inner = obj.getchannel("A").getbbox() or (0, 0, nw, nh)
        box = (x + inner[0], y + inner[1], x + inner[2], y + inner[3])
        if all(_overlap(box, a) == 0 for a in avoid):
            scene.paste(obj, (x, y), obj)
            return box
    return None


def _save_jpeg(im: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, **JPEG)
    path.write_bytes(buf.getvalue())


def _scene_size(side: int, rng) -> tuple[int, int]:
    short = int(side * 0.75)
    return (side, short) if rng.random() < 0.7 else (short, side)


def _background(photos, forbidden, exclude: set, size, rng) -> Image.Image:
    names = [n for n in photos if n not in exclude]
    aspect = size[0] / size[1]
    crop = None
    for attempt in range(50):  # texture photos hold no instance, so they always succeed
        pool = names if attempt < 40 else [n for n in names if n in _BACKGROUND_ONLY]
        name = pool[int(rng.integers(len(pool)))]
        crop = _free_crop(photos, forbidden, name, aspect, rng, 0.45)
        if crop is not None:
            break
    if crop is None:
        raise RuntimeError("no background crop found")  # cannot happen: textures are free
    scene = _jitter(crop.resize(size, Image.BICUBIC), rng)
    for _ in range(int(rng.integers(1, 4))):  # clutter objects from other photos
        name = names[int(rng.integers(len(names)))]
        patch = _free_crop(photos, forbidden, name, float(rng.uniform(0.7, 1.4)), rng, 0.2)
        if patch is not None:
            patch = _augment_object(patch, rng, max_side=int(0.5 * max(size)))
            _paste(scene, patch, float(np.exp(rng.uniform(np.log(0.03), np.log(0.2)))), rng)
    return scene


def _query_image(photo: np.ndarray, rect, context: bool, rng) -> tuple[Image.Image, tuple | None]:
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = rect
    if not context:  # the object alone, under a different augmentation than the database
        dx, dy = int((x1 - x0) * 0.04), int((y1 - y0) * 0.04)
        r = (max(0, x0 - int(rng.integers(0, dx + 1))), max(0, y0 - int(rng.integers(0, dy + 1))),
             min(w, x1 + int(rng.integers(0, dx + 1))), min(h, y1 + int(rng.integers(0, dy + 1))))
        im = _augment_object(Image.fromarray(photo[r[1]:r[3], r[0]:r[2]]), rng, max_angle=6, persp=0.04)
        flat = Image.new("RGB", im.size, (127, 127, 127))
        flat.paste(im, (0, 0), im)
        return flat.crop(im.getchannel("A").getbbox()), None
    grow = rng.uniform(1.6, 2.2)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * grow / 2, (y1 - y0) * grow / 2
    wx0, wy0 = max(0, int(cx - hw)), max(0, int(cy - hh))
    wx1, wy1 = min(w, int(cx + hw)), min(h, int(cy + hh))
    im = _jitter(Image.fromarray(photo[wy0:wy1, wx0:wx1]), rng)
    return im, (x0 - wx0, y0 - wy0, x1 - wx0, y1 - wy0)


def make_benchmark(out_dir: str | os.PathLike, size: str = "small", seed: int = 0) -> Path:
    """Generate the benchmark into ``out_dir`` and return the path of its ``benchmark.json``.

    Deterministic: the same ``size`` and ``seed`` write the same bytes. JPEG files already in
    ``out_dir/db`` and ``out_dir/queries`` are removed first.
    """
    if size not in SIZES:
        raise InvalidArgumentError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    as_int(seed, "seed", 0)
    cfg = SIZES[size]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"out_dir {out} exists and is not a directory")
    for sub in ("db", "queries"):  # a previous run's images must not linger beside the new JSON
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).glob("*.jpg"):
            old.unlink()
    rng = np.random.default_rng(int(seed))
    photos = _load_photos()
    instances = _pick_instances(photos, cfg.instances, rng)
    forbidden: dict[str, list] = {}
    for name, rect in instances:
        forbidden.setdefault(name, []).append(rect)
    names = [f"{name}#{rect[0]},{rect[1]},{rect[2]},{rect[3]}" for name, rect in instances]

    # plan database scenes: (instance indices) per scene, shuffled with distractors
    plans = [[i] for i in range(len(instances)) for _ in range(cfg.scenes_per_instance)]
    plans += [[] for _ in range(cfg.distractors)]
    order = rng.permutation(len(plans))
    plans = [plans[i] for i in order]
    for p in plans:  # one in five positive scenes also shows a second, different instance
        if p and rng.random() < 0.2:
            other = int(rng.integers(len(instances) - 1))
            p.append(other + (other >= p[0]))

    database, gt = [], {}  # gt[instance] -> list of (db id, boxes, fracs)
    for s, plan in enumerate(plans):
        sid = f"d{s:04d}"
        size_ = _scene_size(cfg.scene_side, rng)
        exclude = {instances[i][0] for i in plan} | set()
        scene = _background(photos, forbidden, exclude, size_, rng)
        placed: list = []
        for k, inst in enumerate(plan):
            name, (x0, y0, x1, y1) = instances[inst]
            copies = 2 if (k == 0 and rng.random() < 0.1) else 1
            boxes = []
            for _ in range(copies):
                obj = _augment_object(Image.fromarray(photos[name][y0:y1, x0:x1]), rng,
                                      max_side=int(0.75 * max(size_)))
                hi = 0.40 if copies == 1 and k == 0 else 0.15
                frac = float(np.exp(rng.uniform(np.log(0.03), np.log(hi))))
                box = _paste(scene, obj, frac, rng, avoid=placed)
                if box is not None:
                    boxes.append(box)
                    placed.append(box)
            if boxes:
                area = size_[0] * size_[1]
                fracs = [round((b[2] - b[0]) * (b[3] - b[1]) / area, 5) for b in boxes]
                gt.setdefault(inst, []).append((sid, boxes, fracs))
        path = out / "db" / f"{sid}.jpg"
        _save_jpeg(scene, path)
        database.append({"id": sid, "image": f"db/{sid}.jpg"})

    queries, positives, inst_of = [], {}, {}
    q = 0
    for inst, (name, rect) in enumerate(instances):
        for j in range(cfg.queries_per_instance):
            qid = f"q{q:03d}"
            im, box = _query_image(photos[name], rect, context=(q % 2 == 1), rng=rng)
            _save_jpeg(im, out / "queries" / f"{qid}.jpg")
            queries.append({"id": qid, "image": f"queries/{qid}.jpg", "box": list(box) if box else None})
            positives[qid] = [{"id": sid, "boxes": [list(b) for b in boxes], "area_frac": max(fracs),
                               "area_fracs": fracs, "instance": names[inst]}
                              for sid, boxes, fracs in gt.get(inst, [])]
            inst_of[qid] = names[inst]
            q += 1
    doc = {
        "name": f"pypatch-synth-{size}-s{int(seed)}",
        "generator": {"module": "pypatch.benchgen", "version": GENERATOR_VERSION, "size": size,
                      "seed": int(seed)},
        "instances": inst_of,
        "queries": queries,
        "database": database,
        "positives": positives,
        "junk": {qid: [] for qid in positives},
    }
    import json

    path = out / "benchmark.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path
