"""Export a model directory to one file that runs without avfusion: ``torch.export`` (.pt2) or ONNX.

The exported function takes the model's inputs as named tensors with a dynamic batch dimension
(``audio`` (B, T_a, F) normalised log-mel, ``video`` (B, 3, T, H, W) normalised frames: the
preprocessing stays outside, as ``config.json`` describes it) and returns the logits by name:
``logits`` (the scheme's prediction) and ``<output>_logits`` per head (``audio_logits``,
``video_logits``, ``fusion_logits``, ``global_logits``; ONNX forbids an output named like an
input, so both formats use these names). ``inputs`` picks which modalities the file takes: an
audio-visual model exported for ``("audio",)`` is its audio-only path (Zorro: its exact
unimodal outputs; MBT: the audio stream alone).

The model's ``config.json`` (classes, preprocessing) travels inside the file, with the input
and output names: in the .pt2 as the extra file ``avfusion.json`` (``torch.export.load(f,
extra_files={"avfusion.json": ""})``), in the ONNX file as the metadata property ``avfusion``.

Attention runs on the ``split`` (default) or ``dense`` path; FlexAttention does not export
(``torch.export.save`` cannot serialise its block mask in torch 2.13, and on CPU it is the
unfused eager kernel anyway). docs/evaluation.md lists what exports.

This module lives beside the package's entry points rather than in ``avfusion.models``: it is a
consumer of the model contract (``model(inputs) -> ModelOutput``), like eval and the CLI.
"""

from __future__ import annotations

import contextlib
import json
import keyword
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from avfusion.errors import ConfigError
from avfusion.utils.files import atomic_file

FORMATS = ("pt2", "onnx")
INPUT_SETS: dict[str, tuple[str, ...]] = {"av": ("audio", "video"), "audio": ("audio",), "video": ("video",)}
ATTN_PATHS = ("split", "dense")
TOLERANCE = 1e-4  # max abs logit error of an fp32 export against the eager model
META_NAME = "avfusion.json"  # the .pt2 extra file / the ONNX metadata key ("avfusion")
EXAMPLE_BATCH = 2  # traced with 2: a batch of 1 would let the exporter specialise the dimension to 1
CHECK_BATCHES = (1, 3)  # --check runs other sizes than the traced one: the batch is really dynamic


class Exportable(nn.Module):
    """The model as a function of named tensors: ``(audio=..., video=...) -> {name: (B, C) logits}``."""

    def __init__(self, model: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, audio: torch.Tensor | None = None, video: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        given = {m: x for m, x in (("audio", audio), ("video", video)) if x is not None}
        out = self.model(given)
        return {"logits": out.logits, **{f"{k}_logits": v for k, v in out.outputs.items()}}


def example_inputs(model: nn.Module, inputs: tuple[str, ...], batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fixed-seed random inputs of the model's shapes for the modalities in ``inputs``."""
    g = torch.Generator().manual_seed(seed)
    return {m: x for m, x in model.example_inputs(batch, device="cpu", generator=g).items() if m in inputs}


def example_inputs_order(inputs: tuple[str, ...]) -> list[str]:
    """The order ``trace`` passes the inputs in (``AVModel.example_inputs``: video, then audio)."""
    return [m for m in ("video", "audio") if m in inputs]


SUFFIXES = {".pt2": "pt2", ".onnx": "onnx"}


def export_format(out: str | os.PathLike, fmt: str | None) -> str:
    """The format to write ``out`` in: ``fmt``, or its suffix (any case; neither: pt2). A suffix of
    the other format (``--format pt2 --out x.onnx``) is refused: the file would lie about itself."""
    suffix = Path(out).suffix.lower()
    implied = SUFFIXES.get(suffix)
    if fmt is None:
        return implied or "pt2"
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    if implied is not None and implied != fmt:
        raise ConfigError(f"--out {out} names a {implied} file but --format is {fmt}: name it "
                          f"{Path(out).with_suffix('.' + fmt).name} or drop --format")
    return fmt


def resolve_inputs(model_modalities: tuple[str, ...], which: str | None) -> tuple[str, ...]:
    """``av`` / ``audio`` / ``video`` (None: every modality the model takes) -> modalities, or a ConfigError."""
    if which is None:
        return model_modalities
    if which not in INPUT_SETS:
        raise ConfigError(f"--inputs must be one of {list(INPUT_SETS)}, got {which!r}")
    wanted = INPUT_SETS[which]
    missing = [m for m in wanted if m not in model_modalities]
    if missing:
        raise ConfigError(f"--inputs {which}: the model takes only {'+'.join(model_modalities)}, not {missing[0]}")
    return wanted


def _python_safe(name: str) -> str:
    """``readout.query.global`` -> ``readout.query.global_``: a parameter path that is valid Python."""
    return ".".join(p + "_" if keyword.iskeyword(p) else p for p in name.split("."))


def _rename_keyword_paths(ep: torch.export.ExportedProgram) -> None:
    """Zorro's ``global`` head and query are stored under a Python keyword; ``ep.module()``
    generates ``self.head.global`` from such paths, which does not compile. The weights are
    renamed in the program (``global_``); what the program computes is unchanged."""
    for spec in [*ep.graph_signature.input_specs, *ep.graph_signature.output_specs]:
        target = getattr(spec, "target", None)
        if target is None or _python_safe(target) == target:
            continue
        spec.target = _python_safe(target)
        for table in (ep.state_dict, ep.constants):
            if target in table:
                table[spec.target] = table.pop(target)


def trace(model: nn.Module, inputs: tuple[str, ...]) -> torch.export.ExportedProgram:
    """``torch.export`` of the model for ``inputs``, with a dynamic batch dimension (>= 1)."""
    fn = Exportable(model.eval(), inputs)
    x = example_inputs(model, inputs, EXAMPLE_BATCH)
    example = {m: x[m] for m in example_inputs_order(inputs)}  # a fixed order: the ONNX input names follow it
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        ep = torch.export.export(fn, (), kwargs=example, dynamic_shapes={m: {0: batch} for m in example},
                                 strict=False)
    _rename_keyword_paths(ep)
    return ep


@dataclass
class ExportResult:
    path: Path
    format: str
    inputs: tuple[str, ...]
    outputs: list[str]
    check: dict[str, Any] = field(default_factory=dict)  # filled by check_export

    @property
    def passed(self) -> bool:
        return bool(self.check) and self.check["max_abs_error"] <= self.check["tolerance"]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "inputs": list(self.inputs), "outputs": self.outputs,
                **({"check": self.check} if self.check else {})}


def metadata(model: nn.Module, inputs: tuple[str, ...], outputs: list[str], attn: str) -> dict[str, Any]:
    """What a deployment needs besides the graph: the config (classes, preprocessing), the input
    shapes and the output names."""
    shapes = {m: ["batch", *x.shape[1:]] for m, x in example_inputs(model, inputs, 1).items()}
    return {"format_version": 1, "inputs": shapes, "outputs": outputs, "attn_impl": attn,
            "config": model.cfg.to_dict()}


def export_model(model: nn.Module, out: str | os.PathLike, fmt: str = "pt2", inputs: tuple[str, ...] | None = None,
                 attn: str = "split") -> ExportResult:
    """Write ``model`` (an AVModel on the CPU, fp32) to ``out`` in ``fmt``; see the module docstring."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    inputs = inputs or model.cfg.modalities
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; name the file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        names = list(Exportable(model.eval(), inputs)(**example_inputs(model, inputs, 1)))
    meta = metadata(model, inputs, names, attn)
    ep = trace(model, inputs)
    with atomic_file(out, suffix=f".tmp.{fmt}") as tmp:  # (the exporters want the format's suffix)
        if fmt == "pt2":
            torch.export.save(ep, tmp, extra_files={META_NAME: json.dumps(meta)})
        else:
            _save_onnx(ep, tmp, list(inputs), names, meta)
    return ExportResult(out, fmt, inputs, names)


def _save_onnx(ep: torch.export.ExportedProgram, path: Path, inputs: list[str], outputs: list[str],
               meta: dict[str, Any]) -> None:
    try:
        import onnxscript  # noqa: F401  (the torch exporter needs it)
    except ImportError:
        raise ConfigError("--format onnx needs the onnx and onnxscript packages: pip install onnx onnxscript") from None
    order = list(example_inputs_order(inputs))  # the program's inputs, in the order it was traced with
    # The exporter logs a warning per torchvision op it cannot register (torchvision is not needed).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(sys.stderr):  # the exporter prints its progress
        program = torch.onnx.export(ep, f=None, dynamo=True, input_names=order, output_names=outputs,
                                    external_data=False, verbose=False)
    assert program is not None
    program.model.metadata_props["avfusion"] = json.dumps(meta)
    program.save(str(path), external_data=False)


# -- checks -------------------------------------------------------------------------------------


def run_file(path: str | os.PathLike, fmt: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run an exported file on ``inputs`` the way a deployment would (torch.export.load, or an
    onnxruntime session); name -> (B, C) logits."""
    if fmt == "pt2":
        fn = torch.export.load(str(path)).module()
        with torch.no_grad():
            return {k: v.detach() for k, v in fn(**inputs).items()}
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("checking an ONNX export needs onnxruntime: pip install onnxruntime") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {i.name: inputs[i.name].numpy() for i in session.get_inputs()})
    return {n: torch.from_numpy(v) for n, v in zip(names, values)}


def check_export(model: nn.Module, result: ExportResult, tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Compare the file with the eager model on random inputs at batch sizes other than the traced
    one; ``result.check`` gets the max abs error per output and overall."""
    fn = Exportable(model.eval(), result.inputs)
    per_output: dict[str, float] = {}
    for b in CHECK_BATCHES:
        x = example_inputs(model, result.inputs, b, seed=b)
        with torch.no_grad():
            want = fn(**x)
        got = run_file(result.path, result.format, x)
        for name, w in want.items():
            if name not in got or tuple(got[name].shape) != tuple(w.shape):
                shape = tuple(got[name].shape) if name in got else "missing"
                raise AssertionError(f"{result.path}: output {name} is {shape}, the model gives {tuple(w.shape)}")
            err = float((got[name].float() - w.float()).abs().max())
            per_output[name] = max(per_output.get(name, 0.0), err)
    result.check = {"batches": list(CHECK_BATCHES), "max_abs_error": max(per_output.values()),
                    "per_output": per_output, "tolerance": tolerance}
    return result.check


def read_metadata(path: str | os.PathLike, fmt: str) -> dict[str, Any]:
    """The ``avfusion.json`` a file carries (config, inputs, outputs)."""
    if fmt == "pt2":
        extra = {META_NAME: ""}
        torch.export.load(str(path), extra_files=extra)
        return json.loads(extra[META_NAME])
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props["avfusion"])


__all__ = ["FORMATS", "INPUT_SETS", "SUFFIXES", "export_format", "ATTN_PATHS", "TOLERANCE", "Exportable", "ExportResult", "export_model",
           "check_export", "run_file", "read_metadata", "resolve_inputs", "trace", "example_inputs"]
