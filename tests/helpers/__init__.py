"""Test-side helpers, importable from any test as ``helpers.<module>`` (pyproject.toml puts tests/
on sys.path with ``pythonpath = ["tests"]``): ``media`` writes synthetic mp4 files whose frames
encode their index and whose audio is a sine (with ``frame_value`` / ``read_index`` to check which
frame a decoder returned); ``media_corpus`` is the pytest plugin (loaded by tests/conftest.py) with
the session's generated media corpus (fixtures ``corpus``, ``small_cfg``, ``bigbuckbunny``);
``hostile`` is the hostile-media corpus, each case with the verdict validate, prepare, training and
predict must give (and the table in docs/data.md); ``avclips`` writes small class-coded clips
(colour and tone per class) and their manifests for the end-to-end command-line tests;
``timeline_media`` writes videos whose class changes over time for the timeline tests;
``synthetic`` is a tiny separable in-memory audio-visual dataset for training tests; ``lock_holder``
starts a process holding a folder's lock (avfusion.utils.lock), as a running command would;
``fit_script`` runs a small training job in-process or as a subprocess a test kills (run as a
script it puts tests/ on sys.path itself); ``scenic_mbt_reference`` is an independent NumPy
re-implementation of the official scenic MBT forward pass, with random flax-layout parameters and a
flax msgpack writer, for the conversion tests; ``http_server`` is a local 127.0.0.1 file server
(Range requests, cut transfers on purpose) and ``zoo_release`` a small scenic-layout release's zoo
entry, for the download and zoo tests.
"""
