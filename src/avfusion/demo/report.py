"""runs/demo/report.html: the demo's results with pictures (matplotlib PNGs next to the page)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from avfusion.eval.attention import fusion_attention
from avfusion.models.pretrained import load_pretrained

LABELS = {"mbt_tiny": "MBT", "zorro_vit_tiny": "Zorro", "mbt_tiny_late": "late fusion",
          "mbt_tiny_audio": "audio only", "mbt_tiny_video": "video only"}


def _fig(w: float = 6.0, h: float = 3.6) -> Figure:
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path)
    return path.name


def _main_top1(r: dict[str, Any], cond: str | None = None) -> float | None:
    conds = r["report"]["conditions"]
    c = conds.get(cond) if cond else next(iter(conds.values()))
    return None if not c or "outputs" not in c else c["outputs"]["logits"]["top1"]


def _loss_per_output(entry: dict[str, float]) -> float:
    """Mean of a log entry's per-output losses: Zorro's loss is the sum of four, MBT's a mean of two,
    so the curves are comparable only per output."""
    parts = [v for k, v in entry.items() if k.startswith("loss_")]
    return sum(parts) / len(parts) if parts else entry["loss"]


def plot_curves(results: dict[str, Any], path: Path) -> str:
    fig = _fig()
    ax = fig.add_subplot()
    for name, r in results.items():
        steps = [h["step"] for h in r["history"]]
        ax.plot(steps, [_loss_per_output(h) for h in r["history"]], label=LABELS.get(name, name))
    ax.set(xlabel="step", ylabel="training loss per output", title="Training curves")
    ax.legend()
    return _save(fig, path)


def _grouped_bars(groups: list[str], series: dict[str, list[float]], title: str, path: Path,
                  lines: list[tuple[float, str, str]] = ()) -> str:
    """Bars per group (model), one colour per series; optional horizontal reference lines."""
    fig = _fig(7, 3.6)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for j, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + (j - (len(series) - 1) / 2) * width, values, width, label=label)
    for y, style, label in lines:
        ax.axhline(y, ls=style, color="k", lw=1, label=label)
    ax.set_xticks(range(len(groups)), [LABELS.get(n, n) for n in groups])
    ax.set(ylabel="test top-1", ylim=(0, 1), title=title)
    ax.legend(fontsize=8, ncol=min(5, len(series) + len(lines)))
    return _save(fig, path)


def plot_outputs(results: dict[str, Any], path: Path) -> str:
    names = list(results)
    series = {}
    for o in ("logits", "audio", "video", "fusion", "global"):
        vals = []
        for n in names:
            outs = next(iter(results[n]["report"]["conditions"].values()))["outputs"]
            vals.append(outs[o]["top1"] if o in outs else np.nan)
        series[o] = vals
    return _grouped_bars(names, series, "Accuracy per model and output (both modalities given)", path)


def plot_missing(results: dict[str, Any], path: Path) -> str:
    names = [n for n in results if "audio+video" in results[n]["report"]["conditions"]]
    series = {c: [_main_top1(results[n], c) or 0 for n in names] for c in ("audio+video", "audio only", "video only")}
    lines = [(_main_top1(results[n]), style, f"{LABELS[n]} baseline")
             for n, style in (("mbt_tiny_audio", "--"), ("mbt_tiny_video", ":")) if n in results]
    return _grouped_bars(names, series, "Missing-modality robustness", path, lines)


def plot_conditions(results: dict[str, Any], path: Path) -> str:
    names = list(results)
    conds = sorted({c for r in results.values() for c in r["by_condition"]})
    series = {c: [results[n]["by_condition"].get(c, np.nan) for n in names] for c in conds}
    return _grouped_bars(names, series, "Accuracy per clip condition", path)


def plot_flops(results: dict[str, Any], path: Path) -> str:
    fig = _fig(5, 3.6)
    ax = fig.add_subplot()
    for n, r in results.items():
        ax.scatter(r["gflops"] * 1e3, _main_top1(r))
        ax.annotate(LABELS.get(n, n), (r["gflops"] * 1e3, _main_top1(r)), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set(xlabel="MFLOPs per clip (multiply-adds)", ylabel="test top-1", title="Compute against accuracy")
    return _save(fig, path)


def plot_attention(model_dir: Path, sample: dict[str, Any], path: Path, title: str) -> str | None:
    model = load_pretrained(model_dir)
    inputs = {m: sample[m] for m in ("audio", "video") if m in sample}
    try:
        maps = fusion_attention(model, inputs)
    except ValueError:
        return None
    fig = _fig(8, 3.2)
    video, audio = inputs.get("video"), inputs.get("audio")
    T = model.tokens.grid("video")[0] if "video" in maps else 0
    cols = T + 1
    for t in range(T):
        ax = fig.add_subplot(1, cols, t + 1)
        frame_idx = t * model.cfg.tubelet[0]
        frame = video[0, :, frame_idx].permute(1, 2, 0).float().numpy()
        frame = (frame - frame.min()) / max(1e-6, float(frame.max() - frame.min()))
        ax.imshow(frame)
        att = maps["video"][t].numpy()
        ax.imshow(att, cmap="magma", alpha=0.55, extent=(0, frame.shape[1], frame.shape[0], 0),
                  vmin=0, vmax=float(maps["video"].max()))
        ax.set_title(f"frames {frame_idx}-{frame_idx + model.cfg.tubelet[0] - 1}", fontsize=7)
        ax.axis("off")
    if "audio" in maps:
        ax = fig.add_subplot(1, cols, cols)
        spec = audio[0].T.numpy()  # (F, T_a)
        ax.imshow(spec, origin="lower", aspect="auto", cmap="gray")
        att = maps["audio"].T.numpy()  # (F', T')
        ax.imshow(att, origin="lower", aspect="auto", cmap="magma", alpha=0.55,
                  extent=(0, spec.shape[1], 0, spec.shape[0]))
        ax.set_title("spectrogram", fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def write_report(summary: dict[str, Any], out: Path, test_set: Any, model_dirs: dict[str, Path]) -> Path:
    results = summary["results"]
    pics = {
        "curves": plot_curves(results, out / "curves.png"),
        "outputs": plot_outputs(results, out / "outputs.png"),
        "missing": plot_missing(results, out / "missing_modality.png"),
        "conditions": plot_conditions(results, out / "conditions.png"),
        "flops": plot_flops(results, out / "flops.png"),
    }
    # One clean test clip for the attention maps.
    sample = test_set[0]
    attention = []
    for name, title in (("zorro_vit_tiny", "Zorro: where the fusion tokens look (last layer)"),
                        ("mbt_tiny", "MBT: where the bottleneck tokens look (last layer)")):
        if name in model_dirs:
            pic = plot_attention(model_dirs[name], sample, out / f"attention_{name}.png", title)
            if pic:
                attention.append(pic)

    rows = []
    for name, r in results.items():
        conds = r["report"]["conditions"]
        cells = "".join(f"<td>{_fmt(_main_top1(r, c))}</td>" for c in ("audio+video", "audio only", "video only"))
        uni = next((c for c in conds if c in ("audio", "video")), None)
        if uni:
            cells = f"<td>{_fmt(_main_top1(r, uni))} ({uni} model)</td><td></td><td></td>"
        bc = " / ".join(f"{_fmt(v)}" for v in r["by_condition"].values())
        rows.append(f"<tr><td>{html.escape(LABELS.get(name, name))}</td><td><code>{name}</code></td>{cells}"
                    f"<td>{bc}</td><td>{r['gflops'] * 1e3:.1f}</td><td>{r['params'] / 1e3:.0f}k</td>"
                    f"<td>{r['train_seconds']:.0f}</td></tr>")
    conds_names = " / ".join(next(iter(results.values()))["by_condition"].keys())
    preds = []
    for p in summary["predictions"]:
        top = ", ".join(f"{e['label']} {e['score']:.2f}" for e in p["outputs"]["logits"])
        notes = "; ".join(p.get("notes", []))
        preds.append(f"<tr><td>{html.escape(Path(p['path']).name)}</td><td>{html.escape(str(p.get('truth')))}</td>"
                     f"<td>{html.escape(str(p.get('condition') or ''))}</td><td>{html.escape(top)}</td>"
                     f"<td>{html.escape(notes)}</td></tr>")
    img = "".join(f'<figure><img src="{q}"></figure>' for q in pics.values())
    att = "".join(f'<figure><img src="{q}"></figure>' for q in attention)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>avfusion demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
figure{{display:inline-block;margin:0.5em}}img{{max-width:100%}}code{{background:#f4f4f4}}</style></head>
<body>
<h1>avfusion demo: audio-visual fusion on AV-digits</h1>
<p>Clips show a handwritten digit moving across the frames while a voice speaks it. In a third of the
clips the voice is buried in noise, in a third the digit is hidden behind a box; the test split uses
voices and handwriting that training never saw. Five tiny models were trained for {summary['settings']['steps']}
steps each on {summary['settings']['n_train']} clips and tested on {summary['settings']['n_test']}
(whole run: {summary['seconds'] / 60:.1f} min).</p>
<h2>Results (test top-1)</h2>
<table><tr><th>model</th><th>name</th><th>audio + video</th><th>audio only</th><th>video only</th>
<th>per condition ({html.escape(conds_names)})</th><th>MFLOPs</th><th>params</th><th>train s</th></tr>
{''.join(rows)}</table>
<p>"audio only" / "video only" for the audio-visual models: the same trained model given one
modality. Zorro's unimodal outputs are exactly those it computes with both modalities.</p>
{img}
<h2>Attention of the fusion tokens</h2>
<p>Attention of Zorro's fusion tokens and of MBT's bottleneck tokens (last layer, averaged over heads and tokens)
over the video tubelets and the spectrogram patches of one test clip.</p>
{att}
<h2>Predictions</h2>
<table><tr><th>file</th><th>truth</th><th>condition</th><th>top labels (model {html.escape(summary['best'])})</th><th>notes</th></tr>
{''.join(preds)}</table>
<p>Numbers: <code>results.json</code>; models: <code>models/</code>; data: <code>avdigits/</code>.</p>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"

