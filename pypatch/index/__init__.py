"""Index and search: descriptors -> stored codes -> file -> ranked, boxed hits (PatchIndex over
the native core, product quantizer, pre-transform, ImageIndex with its metadata, model record and
store training, image sources, box refinement, re-ranking, hit records)."""
