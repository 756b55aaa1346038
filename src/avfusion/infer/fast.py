"""Fast inference: one function puts a loaded model into a precision (and compiles it), used by
``avfusion predict`` / ``eval`` / ``embed`` (``--precision fp32|bf16|int8`` and ``--compile``).

What each precision does on a CPU (the model is changed in place, from outside: only its
``nn.Linear`` layers are swapped; attention, norms and everything else run as the model runs them):

- ``fp32`` (default): every linear layer's weight is prepacked once into oneDNN's blocked layout
  and the layer runs as ``torch.ops.mkldnn._linear_pointwise``; the GELU that follows the first
  layer of an MLP block is fused into it. Still float32 arithmetic (the results equal the
  unprepared model's within float rounding, ~1e-6); about 10% faster GEMMs than MKL's on this
  kind of CPU, and GELU no longer costs a pass of its own.
- ``bf16``: the same, with the linear weights prepacked in bfloat16 (half the memory), and the
  forward pass under ``torch.autocast("cpu", torch.bfloat16)`` for the rest (the patch embedding,
  attention). Classifier heads stay float32, so scores keep their precision. Needs a CPU with
  AVX512-BF16 or AMX: elsewhere bfloat16 is emulated, slower than fp32, so it is refused with one
  line rather than quietly made slow.
- ``int8``: dynamic quantisation of the linear layers. Weights are quantised once, symmetric int8
  per output channel; activations are quantised on the fly, symmetric int8, one scale per token,
  so a token's result depends on that token alone (a clip's answer never depends on the other
  clips of its batch, and Zorro's unimodal outputs stay exactly unimodal); the product runs in
  oneDNN (``torch.ops.onednn.qlinear_pointwise``, VNNI where the CPU has it) with a float32
  output. Without VNNI (AVX2-only x86), oneDNN multiplies u8 x s8 pairs into int16 sums that
  saturate, so weights are quantised to 7 bits (+-63) there, as PyTorch's ``reduce_range`` does:
  on an AVX2-only EPYC the largest probability difference to fp32 of a random tiny MBT fell from
  0.010 to 0.0023 (tests/infer/test_fast_inference.py). Classifier heads stay float32; everything else (attention included) runs in float32.
  ``torch.ao.quantization.quantize_dynamic`` is deprecated (torch 2.10+) and quantises each
  activation tensor with one scale and 7 bits on x86; torchao's ``quantize_`` is its successor
  (per-token activations too) but not a dependency of avfusion.

On a CUDA device ``fp32`` leaves the model as it is, ``bf16`` is autocast to bfloat16 (where the
GPU has it) and ``int8`` is refused (dynamic quantisation is a CPU path).

``compile``: ``torch.compile`` of the model with inductor's freezing (weights folded in as
constants, prepacked, bias and GELU fused: what the eager path's swapped layers do by hand), so
the linear layers are not swapped; with ``bf16`` long unmasked attention also runs as
:func:`blocked_attention`, whose softmax inductor fuses and whose GEMMs run at bfloat16 speed
(torch's CPU flash kernel runs bfloat16 at float32 speed without AMX). ``int8`` is not compiled
(its layers are oneDNN kernels already; a note says so). If compiling (or a compiled call) fails,
the model is prepared for the eager path and runs eagerly from then on, and one line on stderr
says why; an input the model itself refuses raises as it would eagerly.

Outputs are float32 whatever the precision (``logits``, ``outputs``, ``features``), so
everything downstream (scores, metrics, JSON) is unchanged. Speed and agreement with fp32 are
measured in benchmarks/README.md ("Inference on CPU"); docs/evaluation.md says how to choose.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from avfusion.errors import ConfigError
from avfusion.layers.block import Mlp
from avfusion.layers.linear import Linear
from avfusion.models.pretrained import model_fingerprint
from avfusion.utils.cpu import cpu_info, onednn_int8, onednn_linear

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")


# -- what the machine can do ----------------------------------------------------------------------


def cpu_bf16() -> str | None:
    """The CPU feature that makes bfloat16 fast here ('AMX' or 'AVX512-BF16'), or None."""
    cpu = getattr(torch, "cpu", None)
    if cpu is not None and getattr(cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if cpu is not None and getattr(cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


def cpu_int8() -> str | None:
    """The CPU feature that makes int8 products fast here ('AMX', 'AVX512-VNNI', 'AVX-VNNI'), or None."""
    flags = cpu_info()[1]
    for flag, name in (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI")):
        if flag in flags:
            return name
    return None


def check_precision(precision: str, device: torch.device | str = "cpu") -> None:
    """Refuse, in one line, a precision this machine cannot run well."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        if device.type == "cuda":
            if not torch.cuda.is_bf16_supported():
                raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; "
                                  "use --precision fp32")
        elif cpu_bf16() is None:
            raise ConfigError("--precision bf16 needs a CPU with AVX512-BF16 or AMX (this one has neither: "
                              "bfloat16 would be emulated, slower than fp32); use --precision int8 or fp32")
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError("--precision int8 (dynamic quantisation) runs on the CPU: use --device cpu, or "
                              "--precision bf16 on the GPU")
        if not onednn_int8():
            raise ConfigError("--precision int8 needs a torch built with oneDNN (torch.ops.onednn.qlinear_pointwise); "
                              "this one has none: use --precision fp32")


# -- swapped linear layers --------------------------------------------------------------------------

LINEARS = (nn.Linear, Linear)  # what is swapped: plain linear layers (not subclasses with other behaviour)


class PackedLinear(nn.Module):
    """An ``nn.Linear`` whose weight is prepacked for oneDNN, in float32 or bfloat16, optionally
    followed by a fused GELU. The output has the weight's dtype."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.float32, gelu: str | None = None):
        super().__init__()
        self.in_features, self.out_features, self.dtype = linear.in_features, linear.out_features, dtype
        weight = linear.weight.detach().to(dtype)
        # oneDNN's blocked layout (an opaque mkldnn tensor): not saved, not a parameter
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, None), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        self.register_buffer("bias", bias, persistent=False)
        self.attr, self.algorithm = ("none", "") if gelu is None else ("gelu", gelu)

    @torch.compiler.disable  # an opaque oneDNN weight: a compiler calls the layer as it is
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.bias, self.attr, [],
                                                  self.algorithm)

    def extra_repr(self) -> str:
        fused = f", fused gelu ({self.algorithm})" if self.attr == "gelu" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}{fused}"


class Int8Linear(nn.Module):
    """Dynamic int8 quantisation of an ``nn.Linear``: int8 weights (symmetric, per output channel)
    and activations quantised on the fly, symmetric, one scale per token (row), so that a token's
    output depends on that token alone: never on the other clips of a batch, and never on another
    modality's tokens (Zorro's unimodal outputs stay exact). The product runs in oneDNN with a
    float32 output; a fused-GELU layer applies its GELU after the rescaling."""

    def __init__(self, linear: nn.Linear, gelu: str | None = None):
        super().__init__()
        self.in_features, self.out_features, self.gelu = linear.in_features, linear.out_features, gelu
        w = linear.weight.detach().float()  # (N, K)
        qmax = 127.0 if cpu_int8() else 63.0  # no VNNI: 7-bit weights keep u8 x s8 pair sums inside int16
        scale = (w.abs().amax(dim=1) / qmax).clamp_min(1e-12)  # (N,)
        q = torch.round(w / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
        self.register_buffer("packed", torch.ops.onednn.qlinear_prepack(q, None), persistent=False)
        self.register_buffer("w_scale", scale, persistent=False)
        self.register_buffer("w_zero", torch.zeros(self.out_features, dtype=torch.int32), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias, persistent=False)
        # uint8 activations with zero point 128 hold the symmetric int8 values (oneDNN's fast u8 x s8 kernels)
        self.register_buffer("one", torch.tensor(1.0), persistent=False)
        self.register_buffer("zero", torch.tensor(128, dtype=torch.int32), persistent=False)

    @torch.compiler.disable  # an opaque oneDNN weight: a compiler calls the layer as it is
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        scale = (x.abs().amax(dim=-1, keepdim=True) / 127.0).clamp_min(1e-12)  # (..., 1): one per token
        q = (torch.round(x / scale) + 128).to(torch.uint8)  # in [1, 255]
        y = torch.ops.onednn.qlinear_pointwise.tensor(q, self.one, self.zero, self.packed, self.w_scale, self.w_zero,
                                                      None, 1.0, 0, torch.float32, "none", [], "")
        y = y.mul_(scale) if self.bias is None else y.mul_(scale).add_(self.bias)
        return y if self.gelu is None else F.gelu(y, approximate=self.gelu)

    def extra_repr(self) -> str:
        fused = f", then gelu ({self.gelu})" if self.gelu else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 dynamic per token{fused}"


def _head_ids(model: nn.Module) -> set[int]:
    heads = getattr(model, "heads", None)
    try:
        found = heads() if callable(heads) else {}
    except NotImplementedError:
        found = {}
    return {id(m) for m in found.values()}


def swap_linears(model: nn.Module, make: Callable[[nn.Linear, str | None], nn.Module],
                 keep_float: set[int] = frozenset()) -> int:
    """Replace every ``nn.Linear`` of ``model`` (in place) by ``make(linear, gelu)``; the GELU of an
    MLP block (avfusion.layers.block.Mlp: fc1 -> act -> fc2) is fused into its fc1 (``gelu`` is the
    GELU's approximation, and the block's ``act`` becomes Identity). Linears whose id is in
    ``keep_float`` become float32 :class:`PackedLinear` instead. Returns the number swapped."""
    fused: dict[int, str] = {}  # id of an Mlp's fc1 -> its GELU's approximation
    mlps = []
    for m in model.modules():
        if type(m) is Mlp and type(m.act) is nn.GELU and type(m.fc1) in LINEARS and id(m.fc1) not in keep_float:
            fused[id(m.fc1)] = m.act.approximate
            mlps.append(m)
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in LINEARS:
                new = PackedLinear(child) if id(child) in keep_float else make(child, fused.get(id(child)))
                setattr(parent, name, new)
                count += 1
    for m in mlps:
        m.act = nn.Identity()  # its GELU now runs inside fc1
    return count


# -- attention under torch.compile -------------------------------------------------------------------

_SDPA = F.scaled_dot_product_attention
CHUNK = 512  # query rows per block of the compiled attention: a block's scores (h x 512 x L) stay in cache
LONG = 1024  # sequences at least this long take the blocked path; shorter ones keep torch's kernel


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v in blocks of query rows, written for the compiler: two bfloat16
    GEMMs per block and a softmax (float32 inside) that inductor fuses into one pass.
    q (B, h, Lq, d), k / v (B, h, Lk, d) -> (B, h, Lq, d)."""
    kt = k.transpose(-2, -1)  # (B, h, d, Lk)
    scale = q.shape[-1] ** -0.5
    out = []
    for i in range(0, q.shape[-2], CHUNK):
        s = (q[..., i:i + CHUNK, :] * scale) @ kt  # (B, h, c, Lk)
        out.append(torch.softmax(s.float(), dim=-1).to(q.dtype) @ v)  # (B, h, c, d)
    return torch.cat(out, dim=-2)


class BlockedAttention(TorchFunctionMode):
    """While active, unmasked bfloat16 ``scaled_dot_product_attention`` over long sequences runs as
    :func:`blocked_attention`. Used only around a compiled bf16 model: there inductor fuses each
    block's softmax, and the blocked GEMMs run at bfloat16 speed, where torch's CPU flash kernel
    runs at float32 speed on CPUs without AMX. Eagerly it would be slower, so it is never used so."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _SDPA and len(args) == 3 and set(kwargs) <= {"dropout_p"} and not kwargs.get("dropout_p"):
            q, k, v = args
            if q.dtype == torch.bfloat16 and q.device.type == "cpu" and k.shape[-2] >= LONG:
                return blocked_attention(q, k, v)
        return func(*args, **kwargs)


# -- the prepared model ---------------------------------------------------------------------------------


def _to_float(out: Any) -> Any:
    """A ModelOutput with every tensor float32 (bf16 runs give bf16 heads' inputs)."""
    f = lambda t: t.float() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return replace(out, logits=f(out.logits), outputs={k: f(v) for k, v in out.outputs.items()},
                   features={k: f(v) for k, v in out.features.items()})


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class InferenceModel(nn.Module):
    """A model prepared by :func:`prepare_for_inference`: ``model(inputs) -> ModelOutput`` (float32
    tensors) at its precision. Attributes it does not have (``cfg``, ``example_inputs``,
    ``num_features``, ...) are the wrapped model's. ``settings()`` is what reports record."""

    def __init__(self, model: nn.Module, precision: str, compile: bool, fingerprint: dict[str, str] | None):
        super().__init__()
        self.model = model
        self.precision = precision
        self.fingerprint = fingerprint  # of the weights as loaded (models/pretrained.py model_fingerprint)
        self.device = next(model.parameters()).device
        self.swapped = 0  # linear layers replaced (eager CPU paths)
        self._compiled: Callable[..., Any] | None = None
        self.compile_state = "off"
        if compile and precision == "int8":
            self.compile_state = "skipped (int8 runs oneDNN's kernels as they are)"
            print("avfusion: --compile does not apply to --precision int8 (its layers are oneDNN kernels); "
                  "running eagerly", file=sys.stderr)
        elif compile:
            try:
                self._compiled = torch.compile(model, dynamic=False)
                self.compile_state = "on"
            except Exception as e:  # noqa: BLE001 - an optimisation: say why it is off and run eagerly
                self._fall_back(e)
                return
        if self._compiled is None:
            self._swap()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    def settings(self) -> dict[str, str]:
        """``{"precision", "compile"}``: compile is "on", "off", "failed (why)" or "skipped (why)"."""
        return {"precision": self.precision, "compile": self.compile_state}

    def _swap(self) -> None:
        """The eager CPU path: swap the linear layers (see the module docstring)."""
        if self.device.type != "cpu" or not onednn_linear() or self.swapped:
            return
        heads = _head_ids(self.model)
        with torch.no_grad():
            if self.precision == "int8":
                self.swapped = swap_linears(self.model, lambda lin, gelu: Int8Linear(lin, gelu), heads)
            else:
                dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
                self.swapped = swap_linears(self.model, lambda lin, gelu: PackedLinear(lin, dtype, gelu), heads)

    def _fall_back(self, e: BaseException) -> None:
        self._compiled = None
        self.compile_state = f"failed ({type(e).__name__})"
        print(f"avfusion: torch.compile failed ({_first_line(e)}); running eagerly", file=sys.stderr)
        self._swap()

    def _autocast(self) -> Any:
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _run_compiled(self, inputs: dict[str, torch.Tensor]) -> Any:
        # freezing: inductor folds the weights in as constants, prepacks them for oneDNN / MKL and
        # fuses bias and GELU into the GEMMs (what the eager path's swapped layers do by hand)
        blocked = BlockedAttention() if self.precision == "bf16" else contextlib.nullcontext()
        with torch._inductor.config.patch(freezing=True), blocked:
            return self._compiled(inputs)  # type: ignore[misc]

    def forward(self, inputs: dict[str, torch.Tensor]) -> Any:
        with self._autocast():
            if self._compiled is not None:
                try:
                    out = self._run_compiled(inputs)
                except Exception as e:  # noqa: BLE001 - eagerly, an input the model refuses raises as itself
                    out = self.model(inputs)
                    self._fall_back(e)  # eager worked: compilation was at fault
            else:
                out = self.model(inputs)
        return _to_float(out)


def inference_settings(model: nn.Module) -> dict[str, str]:
    """What reports record: ``{"precision", "compile"}`` of a prepared model; a model used as it is
    runs in float32, uncompiled."""
    return model.settings() if isinstance(model, InferenceModel) else {"precision": "fp32", "compile": "off"}


def unwrap(model: nn.Module) -> nn.Module:
    """The eager model behind an :class:`InferenceModel` (itself for any other module)."""
    return model.model if isinstance(model, InferenceModel) else model


def prepare_for_inference(model: nn.Module, precision: str = "fp32", compile: bool = False) -> InferenceModel:
    """Put a loaded model (an AVModel, on its device, weights as trained) into ``precision``
    (``fp32`` | ``bf16`` | ``int8``; see the module docstring) and optionally ``torch.compile`` it.

    The model is changed in place (its linear layers are replaced, on the eager CPU path) and put in
    eval mode; the result wraps it. A precision this machine cannot run well is a one-line
    ConfigError.
    """

    if isinstance(model, InferenceModel):
        raise ConfigError(f"the model is already prepared ({model.precision}); load it again for another precision")
    check_precision(precision, next(model.parameters()).device)
    model.eval()
    fingerprint = model_fingerprint(model) if hasattr(model, "cfg") else None  # before any weight changes
    return InferenceModel(model, precision, compile, fingerprint)


__all__ = ["PRECISIONS", "BlockedAttention", "InferenceModel", "Int8Linear", "PackedLinear", "blocked_attention",
           "check_precision", "cpu_bf16", "cpu_int8", "inference_settings", "prepare_for_inference", "swap_linears",
           "unwrap"]
