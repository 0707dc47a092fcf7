"""The Embedder: images -> L2-normalised patch and query descriptors with an ONNX backbone.

Runs an onnxruntime CPU session configured on purpose (:mod:`pypatch.extract.ort_session`). Never
imports torch.

Preprocessing comes from the model card (see ``pypatch.models``): each box is cropped from the
RGB image, resized to the card's input size and normalised as timm's eval transform with
``crop_pct=1.0`` does (:mod:`pypatch.extract.preprocess`).

Three extraction modes:

* ``mode="crop"`` (the paper's): every box is a separate backbone input.
* ``mode="single_pass"``: the backbone runs once per image, resized to ``S x S`` with
  ``S = stride * n`` and ``n`` the smallest multiple of 12 with ``n >= 1.5 * input / stride``
  (384 for a 224-input, stride-32 CNN: a 12x12 feature map on which the 2x2, 3x3 and 4x4 pyramid
  cells fall on whole feature cells). Each box is mapped to feature-map coordinates and pooled with
  the card's pooling (GeM with its p, or average; CLS models use the average of their tokens),
  weighting each feature cell by its overlap with the box; a box narrower than a feature cell
  pools the cell holding its centre (:mod:`pypatch.extract.roi_pool`). Models with a static input size
  run single-pass at their own input size.
  A query meant for a single-pass database is embedded at the side of the finest cell (96 for L3 at
  S=384, see ``Embedder.query_size``) so that it is seen at the scale the cells were seen at.
* ``mode="multi_scale"``: single passes at :data:`MULTI_SCALE_FACTORS` x S (288, 384 and 576 for
  the default model); each cell's descriptor is the sum of its L2-normalised descriptors over the
  scales, and a query the sum over its matching sizes. About 3.8x the pixels of one pass (still
  2.7x fewer than per-crop L3) for most of the quality per-crop has (benchmarks/README.md).
"""
from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

# Names below that this module does not use itself are imported from here by callers and tests.
from pypatch.extract.embeddings import EmbedResults, PatchEmbedding, Prepared, SkippedImage
from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError, PypatchError
from pypatch.extract.grid import PatchGrid, check_boxes, parse_regions
from pypatch.extract.imageio import DEFAULT_MAX_PIXELS, describe, load_image
from pypatch.extract.modes import MODES
from pypatch.extract.ort_session import check_threads, make_session, read_session_card, resolve_model_file
from pypatch.extract.preprocess import RESAMPLE, l2_normalize, preprocess_boxes, query_box
from pypatch.extract.roi_pool import roi_pool

# multi_scale: passes at these multiples of the single-pass side S, rounded to whole strides.
# Chosen on the large offline benchmark over pairs/triples of 192-640 px (benchmarks/README.md).
MULTI_SCALE_FACTORS = (0.75, 1.0, 1.5)


# --------------------------------------------------------------------------- the Embedder
class Embedder:
    """ONNX backbone -> L2-normalised float32 descriptors.

    ``model``: an ``.onnx`` path, a registered model name, or None for the offline default
    (resolved by ``pypatch.models.resolve_model``). ``num_threads``: ORT intra-op threads (None =
    physical cores available). ``batch_size``: backbone inputs per ORT run. ``whitening``: an
    optional ``PCAWhitening`` (or path to its ``.npz``) applied after L2 normalisation.
    ``single_pass_size``: override the single-pass input side S (a multiple of the feature stride;
    ``multi_scale`` runs at :data:`MULTI_SCALE_FACTORS` x S).
    """

    def __init__(self, model: Any = None, num_threads: int | None = None, batch_size: int = 32, *,
                 whitening: Any = None, single_pass_size: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.num_threads = check_threads(num_threads)
        self.batch_size = as_int(batch_size, "batch_size", 1)
        self.max_pixels = max_pixels
        self.model_path = resolve_model_file(model)
        self._session = make_session(self.model_path, self.num_threads)
        self._card = read_session_card(self._session, self.model_path)
        card = self._card
        self._size_hw = (int(card["input_size"][1]), int(card["input_size"][2]))
        self._resample = RESAMPLE.get(str(card["interpolation"]).lower())
        if self._resample is None:
            raise InvalidArgumentError(f"{self.model_path}: unsupported interpolation {card['interpolation']!r}")
        self._mean = np.asarray(card["mean"], dtype=np.float32)
        self._std = np.asarray(card["std"], dtype=np.float32)
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._emb_out = "embedding" if "embedding" in self._outputs else self._outputs[0]
        self._feat_out = "features" if "features" in self._outputs else None
        self.whitening = self._load_whitening(whitening)
        self.single_pass_size = self._single_pass_side(single_pass_size)

    # -- configuration -----------------------------------------------------------------------
    @property
    def model_card(self) -> dict:
        return dict(self._card)

    @property
    def dim(self) -> int:
        """Output dimension (after whitening, if any)."""
        return self.whitening.dim_out if self.whitening is not None else int(self._card["dim"])

    def _load_whitening(self, whitening: Any):
        if whitening is None:
            return None
        from pypatch.extract.whitening import PCAWhitening

        w = whitening if isinstance(whitening, PCAWhitening) else PCAWhitening.load(whitening)
        if w.dim_in != int(self._card["dim"]):
            raise InvalidArgumentError(f"whitening expects dimension {w.dim_in} but the model outputs {self._card['dim']}")
        return w

    def _single_pass_side(self, side: Any) -> tuple[int, int]:
        stride = int(self._card.get("feature_stride") or 32)
        if not self._card.get("dynamic_size", False):
            if side is not None:
                raise InvalidArgumentError("single_pass_size needs a model exported with a dynamic input size")
            return self._size_hw
        if side is None:
            n = -(-int(np.ceil(1.5 * max(self._size_hw) / stride)) // 12) * 12
            return (n * stride, n * stride)
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < stride or side % stride:
            raise InvalidArgumentError(f"single_pass_size must be a positive multiple of the stride {stride}; got {side!r}")
        return (int(side), int(side))

    def pass_sizes(self, mode: str = "single_pass") -> list[tuple[int, int]]:
        """(height, width) of each whole-image backbone pass of ``mode`` (single_pass: one;
        multi_scale: one per :data:`MULTI_SCALE_FACTORS`)."""
        mode = _check_mode(mode)
        if mode == "crop":
            raise InvalidArgumentError("pass_sizes: mode 'crop' embeds each cell, not whole-image passes")
        if mode == "single_pass":
            return [self.single_pass_size]
        if not self._card.get("dynamic_size", False):
            raise InvalidArgumentError(
                f"{self.model_path}: multi_scale needs a model exported with a dynamic input size")
        stride = int(self._card.get("feature_stride") or 32)
        side = self.single_pass_size[0]
        sides = sorted({max(2 * stride, int(round(f * side / stride)) * stride)
                        for f in MULTI_SCALE_FACTORS})
        return [(s, s) for s in sides]

    # -- low level ---------------------------------------------------------------------------
    def _run(self, batch: np.ndarray, output: str) -> np.ndarray:
        outs = []
        for i in range(0, len(batch), self.batch_size):
            outs.append(self._session.run([output], {self._input: batch[i:i + self.batch_size]})[0])
        return np.concatenate(outs) if len(outs) > 1 else outs[0]

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        v = l2_normalize(vectors)
        return self.whitening.apply(v) if self.whitening is not None else v

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Preprocessed inputs (N, 3, H, W) float32 -> (N, D) L2-normalised descriptors."""
        arr = np.ascontiguousarray(crops, dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1] != 3 or arr.shape[0] == 0:
            raise InvalidArgumentError(f"crops must have shape (N, 3, H, W) with N >= 1; got {arr.shape}")
        return self._finish(self._run(arr, self._emb_out))

    def preprocess(self, image: Any, boxes: Any = None) -> np.ndarray:
        """Model input for boxes of an image (default: the whole image) -> (P, 3, H, W) float32."""
        img = load_image(image, max_pixels=self.max_pixels)
        b = np.array([[0, 0, img.width, img.height]], np.int32) if boxes is None else \
            check_boxes(boxes, img.width, img.height)
        return preprocess_boxes(img, b, self._size_hw, self._resample, self._mean, self._std)

    def _prepare(self, index: int, image: Any, grid: PatchGrid, mode: str, name: str | None) -> Prepared:
        label = name if name is not None else describe(image)
        img = load_image(image, name=label, max_pixels=self.max_pixels)
        boxes, levels = grid.boxes(img.width, img.height), grid.levels_of(img.width, img.height)
        if mode == "crop":
            tensor = preprocess_boxes(img, boxes, self._size_hw, self._resample, self._mean, self._std)
        else:  # one input per whole-image pass
            whole = np.array([[0, 0, img.width, img.height]], np.int32)
            tensor = [preprocess_boxes(img, whole, hw, self._resample, self._mean, self._std)
                      for hw in self.pass_sizes(mode)]
        return Prepared(index, label, img.width, img.height, boxes, levels, tensor)

    def _pool_single(self, feats: np.ndarray, p: Prepared) -> np.ndarray:
        pooling = str(self._card.get("pooling", "gem")).lower()
        return roi_pool(feats, p.boxes, p.width, p.height, "gem" if pooling == "gem" else "avg",
                        float(self._card.get("gem_p") or 3.0))

    def _run_both(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings, feature maps) of one batch in the same backbone runs."""
        embs, feats = [], []
        for i in range(0, len(batch), self.batch_size):
            e, f = self._session.run([self._emb_out, self._feat_out],
                                     {self._input: batch[i:i + self.batch_size]})
            embs.append(e)
            feats.append(f)
        return np.concatenate(embs), np.concatenate(feats)

    def _embed_prepared(self, items: list[Prepared], mode: str, maps: bool = False):
        if mode == "crop":
            batch = np.concatenate([p.tensor for p in items])
            if maps:  # the finest cells' feature maps come from the same runs (no extra pass)
                raw, feats = self._run_both(batch)
            else:
                raw, feats = self._run(batch, self._emb_out), None
            splits = np.cumsum([len(p.boxes) for p in items])[:-1]
            vecs = np.split(self._finish(raw), splits)
            if not maps:
                return vecs
            from pypatch.index.box_maps import stitch_cell_maps

            out = []
            for p, v, f in zip(items, vecs, np.split(feats, splits)):
                n = int(p.levels.max()) + 1  # the finest level is an n x n grid; shifted cells follow it
                finest = np.flatnonzero(p.levels == p.levels.max())[:n * n]
                out.append((v, stitch_cell_maps(f[finest], n)))
            return out
        if self._feat_out is None:
            raise InvalidArgumentError(f"{self.model_path}: {mode} needs a 'features' output; re-export the model")
        sums = [0.0] * len(items)
        for j in range(len(items[0].tensor)):  # one batch per pass size
            feats = self._run(np.concatenate([p.tensor[j] for p in items]), self._feat_out)
            for i, p in enumerate(items):
                sums[i] = sums[i] + l2_normalize(self._pool_single(feats[i], p))
        return [self._finish(v) for v in sums]

    # -- public API --------------------------------------------------------------------------
    def embed_patches(self, image: Any, regions: Any = "L3", mode: str = "crop") -> tuple[np.ndarray, np.ndarray]:
        """Descriptors of an image's regions -> (vectors (P, D) float32, boxes (P, 4) int32).

        ``regions``: "L0".."L4", "L1s".."L4s", "rmac", "rmacN", "sliding", a PatchGrid, or explicit (K, 4) pixel boxes.
        """
        mode = _check_mode(mode)
        grid = _as_grid(regions)
        p = self._prepare(0, image, grid, mode, None)
        return self._embed_prepared([p], mode)[0], p.boxes

    def query_size(self, regions: Any = "L3", mode: str = "crop") -> tuple[int, int]:
        """Input (height, width) at which ``embed_query`` embeds a query meant for a database
        embedded with ``regions`` and ``mode`` (for ``"multi_scale"``: the size matching the
        pass at S; :meth:`query_sizes` lists one per pass).

        ``"crop"``: the model's input size (every cell was resized to it too). Single-pass modes:
        the side of the finest cell of the grid on the pass input (96 for L3 at S=384, 128 for
        L2, 192 for L1), at least 2 feature cells and at most the model's input size. A query
        seen at the scale the cells were seen at matches them far better (benchmarks/README.md,
        Extraction: L3 mAP 36 -> 48). Explicit boxes and static size models keep the input size.
        """
        sizes = self.query_sizes(regions, mode)
        return sizes[len(sizes) // 2]

    def query_sizes(self, regions: Any = "L3", mode: str = "crop") -> list[tuple[int, int]]:
        """One query input (height, width) per backbone pass of ``mode`` (see :meth:`query_size`);
        ``embed_query`` sums the L2-normalised descriptors at these sizes."""
        mode = _check_mode(mode)
        grid = _as_grid(regions)
        if mode == "crop" or not self._card.get("dynamic_size", False) or grid.kind == "custom":
            return [self._size_hw]
        stride = int(self._card.get("feature_stride") or 32)
        sizes = []
        for sh, sw in self.pass_sizes(mode):
            b = grid.boxes(sw, sh)
            side = max(2 * stride, int(round(float(np.min(np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))))))
            sizes.append((min(side, self._size_hw[0]), min(side, self._size_hw[1])))
        return sizes

    def embed_query(self, image: Any, box: Any = None, *, regions: Any = "L3", mode: str = "crop",
                    size: Any = None) -> np.ndarray:
        """One global (D,) descriptor of the whole image, or of ``box`` [x0, y0, x1, y1] (cropped first).

        ``regions`` / ``mode`` describe the database it will search (see :meth:`query_sizes`;
        the default is the model's input size); ``size`` (an int side or (height, width)) overrides.
        """
        return self.embed_prepared_queries(
            [self.prepare_query(image, box, regions=regions, mode=mode, size=size)])[0]

    def embed_queries(self, images: Iterable[Any], boxes: Iterable[Any] | None = None, *,
                      regions: Any = "L3", mode: str = "crop") -> np.ndarray:
        """:meth:`embed_query` of many images (``boxes``: one box or None per image) -> (n, D),
        the backbone run once per batch of :attr:`batch_size` inputs instead of once per query
        (the same numbers: each row is computed as alone)."""
        images = list(images)
        boxes = [None] * len(images) if boxes is None else list(boxes)
        if len(boxes) != len(images):
            raise InvalidArgumentError(
                f"boxes: expected one box (or None) per image ({len(images)}), got {len(boxes)}")
        return self.embed_prepared_queries(
            [self.prepare_query(img, b, regions=regions, mode=mode) for img, b in zip(images, boxes)])

    def prepare_query(self, image: Any, box: Any = None, *, regions: Any = "L3", mode: str = "crop",
                      size: Any = None) -> list[np.ndarray]:
        """The backbone inputs of one :meth:`embed_query` call, one (1, 3, h, w) array per pass
        (decode, crop, resize, normalise: no backbone run). A server prepares each query in its
        own thread and embeds many at once with :meth:`embed_prepared_queries`."""
        img = load_image(image, max_pixels=self.max_pixels)
        b = np.array([[0, 0, img.width, img.height]], np.int32) if box is None else \
            query_box(box, img.width, img.height)
        sizes = self.query_sizes(regions, mode) if size is None else [self._query_hw(size)]
        return [preprocess_boxes(img, b, hw, self._resample, self._mean, self._std) for hw in sizes]

    def embed_prepared_queries(self, prepared: list) -> np.ndarray:
        """(n, D) descriptors of queries made by :meth:`prepare_query` with the same regions,
        mode and size: the inputs of each pass go through the backbone as one batch."""
        if not prepared or any(len(p) != len(prepared[0]) for p in prepared):
            raise InvalidArgumentError("prepared: expected one or more queries prepared alike")
        total = 0.0
        for j in range(len(prepared[0])):
            x = [p[j] for p in prepared]
            if any(a.shape != x[0].shape for a in x):
                raise InvalidArgumentError("prepared: queries were prepared at different sizes")
            total = total + l2_normalize(self._run(np.concatenate(x), self._emb_out))
        return self._finish(total)

    def _query_hw(self, size: Any) -> tuple[int, int]:
        hw = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
        ok = isinstance(hw, (tuple, list)) and len(hw) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in hw)
        if not ok:
            raise InvalidArgumentError(f"size must be a positive int or (height, width); got {size!r}")
        if tuple(hw) != tuple(self._size_hw) and not self._card.get("dynamic_size", False):
            raise InvalidArgumentError(f"size {size!r}: this model has a static input size {self._size_hw}")
        return (int(hw[0]), int(hw[1]))

    def embed_query_patches(self, image: Any, box: Any = None, regions: Any = "L1",
                            mode: str = "crop") -> tuple[np.ndarray, np.ndarray]:
        """A multi-patch query: the grid of the query (or of its ``box``) ->
        (vectors (P, D), boxes (P, 4) in the original image's pixels)."""
        img = load_image(image, max_pixels=self.max_pixels)
        if box is None:
            return self.embed_patches(img, regions=regions, mode=mode)
        x0, y0, x1, y1 = query_box(box, img.width, img.height)[0].tolist()
        vecs, boxes = self.embed_patches(img.crop((x0, y0, x1, y1)), regions=regions, mode=mode)
        return vecs, (boxes + np.array([x0, y0, x0, y0], dtype=np.int32)).astype(np.int32)

    def embed_many(self, images: Iterable[Any], regions: Any = "L3", mode: str = "crop", *,
                   on_error: str = "skip", names: Iterable[str] | None = None,
                   show_progress: bool | None = None, prefetch: int = 4,
                   maps: bool = False) -> EmbedResults:
        """Embed many images; decode + crop/resize run in a background thread, overlapping ORT.

        Returns an ``EmbedResults`` iterator of ``PatchEmbedding`` in input order. With
        ``on_error="skip"`` an unusable image (any ``PypatchError`` while loading it, e.g. ImageError)
        is recorded in ``results.skipped`` and the batch goes on; ``"raise"`` re-raises it.
        Progress (tqdm) goes to stderr, only when it is a terminal unless ``show_progress`` says so.
        ``maps=True`` (per-crop pyramids only): each result also carries ``maps``, the finest
        level's crop feature maps stitched into one map of the image
        (:func:`pypatch.index.box_maps.stitch_cell_maps`), from the same backbone runs.
        """
        mode = _check_mode(mode)
        grid = _as_grid(regions)
        if maps:
            _check_maps(grid, mode, self._feat_out, self.model_path)
        if on_error not in ("skip", "raise"):
            raise InvalidArgumentError(f"on_error must be 'skip' or 'raise'; got {on_error!r}")
        name_list = None if names is None else list(names)
        total = len(images) if hasattr(images, "__len__") else None
        if show_progress is None:
            show_progress = sys.stderr.isatty()

        def generate(skipped: list[SkippedImage]) -> Iterator[PatchEmbedding]:
            from tqdm.auto import tqdm

            q: queue.Queue = queue.Queue(maxsize=max(1, int(prefetch)))
            stop = threading.Event()

            def put(item) -> bool:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        return True
                    except queue.Full:
                        continue
                return False

            def producer() -> None:
                try:
                    for i, image in enumerate(images):
                        name = name_list[i] if name_list is not None and i < len(name_list) else None
                        try:
                            item = self._prepare(i, image, grid, mode, name)
                        except PypatchError as exc:
                            item = Prepared(i, name or describe(image), error=str(exc), exc=exc)
                        if not put(item):
                            return
                except BaseException as exc:  # e.g. the images iterable itself failed
                    put(exc)
                    return
                put(None)

            worker = threading.Thread(target=producer, name="pypatch-embed-prefetch", daemon=True)
            worker.start()
            bar = tqdm(total=total, disable=not show_progress, unit="img", desc="embedding")
            pending: list[Prepared] = []
            n_inputs = 0
            try:
                while True:
                    item = q.get()
                    if isinstance(item, BaseException):
                        raise item
                    if item is not None:
                        if item.error is not None:
                            bar.update(1)
                            if on_error == "raise":
                                raise item.exc
                            skipped.append(SkippedImage(item.index, item.name, item.error))
                            continue
                        pending.append(item)
                        n_inputs += len(item.tensor)
                    if pending and (item is None or n_inputs >= self.batch_size):
                        for p, out in zip(pending, self._embed_prepared(pending, mode, maps)):
                            bar.update(1)
                            vecs, fmap = out if maps else (out, None)
                            yield PatchEmbedding(p.index, p.name, p.width, p.height, vecs, p.boxes,
                                                 p.levels, fmap)
                        pending, n_inputs = [], 0
                    if item is None:
                        return
            finally:
                stop.set()
                bar.close()
                worker.join(timeout=5)

        return EmbedResults(generate)

    def __repr__(self) -> str:
        return (f"Embedder({self._card.get('name', '?')!r}, dim={self.dim}, input={self._size_hw}, "
                f"num_threads={self.num_threads}, batch_size={self.batch_size})")


def _check_maps(grid: PatchGrid, mode: str, feat_out, model_path) -> None:
    """Box maps are stitched from the finest level of a per-crop pyramid (an n x n grid; the
    half-shifted cells of L3s and the like are not part of the map)."""
    if mode != "crop" or grid.to_dict().get("kind") != "pyramid":
        raise InvalidArgumentError(
            f"box maps need per-crop extraction of a pyramid grid (L1..L4, L1s..L4s); got mode {mode!r}, "
            f"regions {grid.to_dict().get('kind')!r}")
    if feat_out is None:
        raise InvalidArgumentError(f"{model_path}: box maps need a 'features' output; re-export the model")


def _check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {MODES}; got {mode!r}")
    return mode


def _as_grid(regions: Any) -> PatchGrid:
    if isinstance(regions, (np.ndarray, list, tuple)):
        return PatchGrid.custom(regions)
    return parse_regions(regions)


__all__ = ["Embedder"]
