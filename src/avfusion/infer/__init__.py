"""Inference products: answers for files and corpora, timelines, embeddings, exports.

- ``fast``: the precision / compile choices (fp32, bf16, int8; ``--precision``, ``--compile``);
- ``predict``: one file's answer (top labels per output, notes, coverage);
- ``corpus``: the resumable corpus runner (part files, a rerun skips finished rows) that
  ``predict --data``, ``embed`` and timeline manifests share;
- ``over_time``: labels window by window over a whole file (``predict --timeline``);
- ``embed``: pooled features per output for a corpus (``avfusion embed``);
- ``export``: one .pt2 / .onnx file that runs without avfusion.

Evaluation (metrics, the papers' multi-view protocol, retrieval) is in eval/, which builds on
this package for the precision a model runs at.
"""
