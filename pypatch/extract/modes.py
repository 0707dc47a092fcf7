"""Extraction modes, shared by the Embedder, the ImageIndex and the CLI (no heavy imports).

``crop``: every cell embedded on its own (the paper); ``single_pass``: cells pooled from one
feature map of the whole image; ``multi_scale``: from three, summed (see :mod:`pypatch.extract.embedder`).
"""
MODES = ("crop", "single_pass", "multi_scale")
