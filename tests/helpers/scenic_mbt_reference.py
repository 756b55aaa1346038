"""An independent NumPy re-implementation of the official scenic MBT forward pass.

Written from the semantics in ``tests/fixtures/scenic_mbt/README.md`` and scenic's
``projects/mbt/model.py`` (MBT / MBTEncoder), directly on the flax parameter tree: (in, out)
Dense kernels, (d, h, k) attention kernels, NTHWC video, a spectrogram tiled to 3 channels.
It shares no code with avfusion (not even the converter's key map), computes in float64, and is
itself checked against the official outputs in the fixture's ``io.npz``; that check is what lets
it stand in for JAX on the configurations the fixture does not cover.

Also here: a random flax-layout PARAMS tree for any MBT configuration, and a writer of flax
msgpack train states (``flax.serialization.to_bytes`` format) so that tests exercise the real
file path.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

Params = dict[str, Any]


# -- the official forward ----------------------------------------------------------------------
def layer_norm(x: np.ndarray, p: Params, eps: float = 1e-6) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu_tanh(x: np.ndarray) -> np.ndarray:  # flax.linen.gelu(approximate=True)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def dense(x: np.ndarray, p: Params) -> np.ndarray:
    return x @ p["kernel"] + p["bias"]


def mha(x: np.ndarray, p: Params) -> np.ndarray:
    """flax MultiHeadDotProductAttention, self-attention, no mask. x (N, L, d)."""
    q = np.einsum("nld,dhk->nlhk", x, p["query"]["kernel"]) + p["query"]["bias"]
    k = np.einsum("nld,dhk->nlhk", x, p["key"]["kernel"]) + p["key"]["bias"]
    v = np.einsum("nld,dhk->nlhk", x, p["value"]["kernel"]) + p["value"]["bias"]
    q = q / np.sqrt(q.shape[-1])
    logits = np.einsum("nqhk,nlhk->nhql", q, k)
    logits = logits - logits.max(-1, keepdims=True)
    w = np.exp(logits)
    w = w / w.sum(-1, keepdims=True)
    o = np.einsum("nhql,nlhk->nqhk", w, v)
    return np.einsum("nqhk,hkd->nqd", o, p["out"]["kernel"]) + p["out"]["bias"]


def encoder_block(x: np.ndarray, p: Params) -> np.ndarray:
    """scenic's EncoderBlock (pre-LN), deterministic."""
    x = x + mha(layer_norm(x, p["LayerNorm_0"]), p["MultiHeadDotProductAttention_0"])
    m = p["MlpBlock_0"]
    y = dense(gelu_tanh(dense(layer_norm(x, p["LayerNorm_1"]), m["Dense_0"])), m["Dense_1"])
    return x + y


def conv_patches(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """nn.Conv with stride = kernel, VALID, channels last, flattened row-major over the grid.

    x (N, *S, C), kernel (*P, C, d) -> (N, prod(S / P), d)."""
    n, spatial, c = x.shape[0], x.shape[1:-1], x.shape[-1]
    patch = kernel.shape[:-2]
    grid = [s // p for s, p in zip(spatial, patch, strict=True)]
    shape = [n]
    for g, p in zip(grid, patch, strict=True):
        shape += [g, p]
    xs = x[(slice(None),) + tuple(slice(0, g * p) for g, p in zip(grid, patch, strict=True))].reshape(*shape, c)
    nd = len(patch)
    # (N, g0, p0, g1, p1, ..., C) -> (N, g0, g1, ..., p0, p1, ..., C)
    perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [1 + 2 * nd]
    xs = xs.transpose(perm).reshape(n, int(np.prod(grid)), -1)
    return xs @ kernel.reshape(-1, kernel.shape[-1]) + bias


def mbt_forward(params: Params, rgb: np.ndarray | None, spectrogram: np.ndarray | None, fusion_layer: int,
                share_encoder: bool, use_bottleneck: bool, test_with_bottlenecks: bool = True,
                modality_fusion: tuple[str, ...] = ("spectrogram", "rgb")) -> dict[str, np.ndarray]:
    """scenic MBT, classifier='token', eval mode, for ``modality_fusion`` ('spectrogram', 'rgb')
    (the default) or one of them (the unimodal "Spec-only" / "RGB-only" models).

    rgb (N, T, H, W, 3); spectrogram (N, time, mel), tiled to 3 channels as the official input
    (either may be None when its modality is not in ``modality_fusion``).
    Returns logits_<modality> per modality (the per-modality heads) and logits (their mean).
    Scenic's naming: the CLS token is 'cls' for rgb and for any lone modality, else 'cls<modality>';
    the rgb stream runs ``encoderblock_{l}``, another modality ``encoderblock_{l}_<modality>``
    unless share_encoder (then the rgb-named block). One modality never fuses.
    """
    P = {k: _as64(v) for k, v in params.items()}
    tr = P["Transformer"]
    order = tuple(modality_fusion)  # scenic iterates modality_fusion
    unimodal = len(order) == 1
    tokens = {}
    if "rgb" in order:
        tokens["rgb"] = conv_patches(rgb.astype(np.float64), P["embedding"]["kernel"], P["embedding"]["bias"])
    if "spectrogram" in order:
        spec3 = np.repeat(spectrogram[..., None], 3, axis=-1).astype(np.float64)
        tokens["spectrogram"] = conv_patches(spec3, P["embedding_spectrogram"]["kernel"],
                                             P["embedding_spectrogram"]["bias"])
    n = next(iter(tokens.values())).shape[0]
    x = {}
    for m in order:
        cls = np.tile(P["cls" if m == "rgb" or unimodal else "cls" + m], (n, 1, 1))
        pos = tr["posembed_input" if m == "rgb" else "posembed_input_" + m]["pos_embedding"]
        x[m] = np.concatenate([cls, tokens[m]], axis=1) + pos
    bottleneck = np.tile(P["bottleneck"], (n, 1, 1)) if use_bottleneck else None
    depth = len({int(k.split("_")[1]) for k in tr if k.startswith("encoderblock_")})

    def enc(m: str, lyr: int) -> Params:
        if share_encoder or m == "rgb":
            return tr[f"encoderblock_{lyr}"]
        return tr[f"encoderblock_{lyr}_{m}"]

    combined = None
    for lyr in range(depth):
        if lyr < fusion_layer or unimodal or (use_bottleneck and not test_with_bottlenecks):
            for m in order:
                x[m] = encoder_block(x[m], enc(m, lyr))
        elif use_bottleneck:
            outs = []
            for m in order:
                t = x[m].shape[1]
                y = encoder_block(np.concatenate([x[m], bottleneck], axis=1), enc(m, lyr))
                x[m] = y[:, :t]
                outs.append(y[:, t:])
            bottleneck = np.mean(np.stack(outs, axis=-1), axis=-1)
        elif not share_encoder:
            new = {}
            for m in order:
                t = x[m].shape[1]
                other = [x[o] for o in ("rgb", "spectrogram") if o != m and o in order]  # scenic's _MODALITIES
                y = encoder_block(np.concatenate(other + [x[m]], axis=1), enc(m, lyr))
                new[m] = y[:, -t:]
            x = new
        else:
            if combined is None:
                combined = np.concatenate([x[m] for m in order], axis=1)
            combined = encoder_block(combined, enc("rgb", lyr))
    if combined is None:
        combined = np.concatenate([x[m] for m in order], axis=1)
    encoded = layer_norm(combined, tr["encoder_norm"])
    out, start = {}, 0
    for m in order:
        out["logits_" + m] = dense(encoded[:, start], P["output_projection"])
        start += x[m].shape[1]
    out["logits"] = sum(out["logits_" + m] for m in order) / len(order)
    return out


def _as64(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _as64(v) for k, v in tree.items()}
    return np.asarray(tree, dtype=np.float64)


# -- random official-layout parameters ---------------------------------------------------------
def random_mbt_params(
    rng: np.random.Generator,
    *,
    hidden: int = 24,
    heads: int = 2,
    mlp: int = 40,
    depth: int = 3,
    patches: tuple[int, int, int] = (4, 4, 2),  # scenic patches.size = [fh, fw, ft]
    rgb_thw: tuple[int, int, int] = (4, 16, 16),
    spec_tf: tuple[int, int] = (32, 16),
    n_bottlenecks: int | None = 4,  # None = use_bottleneck False
    share_encoder: bool = False,
    classes: int = 5,
    modality_fusion: tuple[str, ...] = ("spectrogram", "rgb"),
) -> Params:
    """A PARAMS tree in scenic MBT's layout with random values (nothing zero, so no head or
    bias hides a mapping bug). Like flax, it holds only the parameters of modules the model
    calls: with one modality, only that modality's embedding, position embedding and blocks
    (a spectrogram-only model with share_encoder runs the RGB-named blocks), and the CLS token
    is 'cls' whatever the modality; ``bottleneck`` is created whenever use_bottleneck is set."""
    fh, fw, ft = patches
    d, k = hidden, hidden // heads
    n_rgb = (rgb_thw[0] // ft) * (rgb_thw[1] // fh) * (rgb_thw[2] // fw)
    n_spec = (spec_tf[0] // fh) * (spec_tf[1] // fw)

    def w(*shape: int, std: float = 0.15) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def ln() -> Params:
        return {"scale": (1.0 + w(d, std=0.2)), "bias": w(d, std=0.1)}

    def block() -> Params:
        attn = {n: {"kernel": w(d, heads, k), "bias": w(heads, k, std=0.2)} for n in ("query", "key", "value")}
        attn["out"] = {"kernel": w(heads, k, d), "bias": w(d, std=0.1)}
        return {
            "LayerNorm_0": ln(), "MultiHeadDotProductAttention_0": attn, "LayerNorm_1": ln(),
            "MlpBlock_0": {"Dense_0": {"kernel": w(d, mlp), "bias": w(mlp, std=0.1)},
                           "Dense_1": {"kernel": w(mlp, d), "bias": w(d, std=0.1)}},
        }

    has_rgb, has_spec = "rgb" in modality_fusion, "spectrogram" in modality_fusion
    unimodal = len(modality_fusion) == 1
    # (draw order kept as it was for the audio-visual trees, so their values do not change)
    tr: Params = {}
    if has_rgb:
        tr["posembed_input"] = {"pos_embedding": w(1, 1 + n_rgb, d)}
    if has_spec:
        tr["posembed_input_spectrogram"] = {"pos_embedding": w(1, 1 + n_spec, d)}
    tr["encoder_norm"] = ln()
    for lyr in range(depth):
        if has_rgb or share_encoder:
            tr[f"encoderblock_{lyr}"] = block()
        if has_spec and not share_encoder:
            tr[f"encoderblock_{lyr}_spectrogram"] = block()
    params: Params = {}
    if has_rgb:
        params["embedding"] = {"kernel": w(ft, fh, fw, 3, d, std=0.1), "bias": w(d, std=0.1)}
    if has_spec:
        params["embedding_spectrogram"] = {"kernel": w(fh, fw, 3, d), "bias": w(d, std=0.1)}
    if has_rgb:
        params["cls"] = w(1, 1, d, std=0.2)
    if has_spec:
        params["cls" if unimodal else "clsspectrogram"] = w(1, 1, d, std=0.2)
    params["Transformer"] = tr
    params["output_projection"] = {"kernel": w(d, classes, std=0.2), "bias": w(classes, std=0.05)}
    if n_bottlenecks is not None:
        params["bottleneck"] = w(1, n_bottlenecks + 1, d, std=0.2)  # +1: the 'token' classifier's extra
    return params


# -- flax msgpack writer -------------------------------------------------------------------------
def _ext_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        payload = msgpack.packb((list(obj.shape), obj.dtype.name, obj.tobytes()), use_bin_type=True)
        return msgpack.ExtType(1, payload)
    if isinstance(obj, np.generic):
        a = np.asarray(obj)
        return msgpack.ExtType(3, msgpack.packb(((), a.dtype.name, a.tobytes()), use_bin_type=True))
    raise TypeError(type(obj))


def to_flax_msgpack(tree: Params) -> bytes:
    """What ``flax.serialization.to_bytes`` writes for a tree of numpy arrays."""
    return msgpack.packb(tree, default=_ext_default, use_bin_type=True)


def train_state(params: Params, layout: str = "optimizer") -> Params:
    """scenic's older train state ('optimizer/target') or the newer one ('params')."""
    step = np.int64(1000)
    if layout == "optimizer":
        return {"global_step": step, "optimizer": {"target": params, "state": {"step": step}}}
    return {"global_step": step, "params": params, "opt_state": {}, "rng": np.zeros(2, np.uint32)}
