"""Audio-visual data: manifests and dataset adapters, PyAV decoding, Kaldi fbank, transforms,
datasets, shards, samplers and input validation (docs/data.md).

Submodules are imported explicitly (``from avfusion.data.datasets import VideoDataset``) so that
importing the package does not load PyAV or webdataset.
"""
