"""Extraction: image -> boxes -> descriptors (image I/O, the grid pyramid, preprocessing, the
onnxruntime session, RoI pooling, the Embedder and its extraction modes, PCA whitening)."""
