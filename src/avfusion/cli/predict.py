"""`avfusion predict VIDEO... [--model DIR] [--top-k K] [--json]`: top labels per output, or
`avfusion predict --data SOURCE --out preds.jsonl [--model DIR] ...` for a whole corpus.

Without --model, the model the demo trained last (runs/demo/best) is used. A file without an
audio stream gets the model's video-only outputs (and vice versa), and the output says so. A
damaged file (truncated, packets that fail to decode) is answered from what decodes, and the
notes (and "coverage" in --json) say how much was padding or lost; a file with nothing
decodable is an error for that file (exit status 1), the other files are still answered.

--data SOURCE (or --manifest / --shards: a manifest, a folder of shards, a .tar, a brace pattern,
a pipe: or http URL) writes one JSON line per row to --out: id, path (manifest rows; their
start / end segment is used), has_audio / has_video, outputs, notes and coverage as above, or
"error" for a row that cannot be used (the run goes on, exit status 0, and a count of such rows
is printed on stderr). The run is resumable: rerun the same command after a kill and it goes on
where it stopped (OUT.parts/ holds the rows done, OUT.run.json what the run is for); a complete
OUT is left as it is. Under `torchrun --nproc_per_node N -m avfusion predict --data ...` each rank
answers its part of the rows and rank 0 writes OUT. See docs/evaluation.md.

--timeline answers every window of the whole file instead: windows of --window seconds (default:
the model's clip length) every --hop seconds (default: half a window), times from the file's
start; one decode per --batch-size windows, so memory stays bounded on an hour-long video. A --hop
or --window below the model's time step (10 ms with audio) is refused, a window longer than the
file is the file, and what a request became is noted (docs/evaluation.md "Bounds").
Printed as a table, or with --json one object per file: {"file", "window", "hop", "notes",
"timeline": [{"start", "end", "label", "score", "outputs": {name: top-k}, "notes"}, ...]}.
--plot FILE.png | FILE.html draws per-output scores of the top classes over time (one video).
With --data, one such line per manifest row (its start / end segment, or the whole file).

--precision fp32 | bf16 | int8 and --compile make CPU inference faster (avfusion/infer/fast.py;
measured in docs/evaluation.md "Fast CPU inference"): bf16 autocasts to bfloat16 (CPUs with
AVX512-BF16 or AMX), int8 quantises the linear layers dynamically; --compile runs torch.compile
(eagerly, with a note, if it fails). The JSON says which ran ("inference"; with --data, OUT.run.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from avfusion.cli._common import parse_args
from avfusion.errors import InputError, UserError
from avfusion.infer.fast import PRECISIONS
from avfusion.utils.cli_args import ALLOW_PARTIAL_HELP, device_arg, int_at_least, positive_float
from avfusion.utils.device import resolve_device

DEFAULT_MODEL = Path("runs/demo/best")


def add_corpus_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """The flags `predict --data` and `embed` share."""
    p.add_argument("--data", "--manifest", "--shards", dest="data", metavar="SOURCE",
                   help="a manifest (.csv / .jsonl), a folder of shards, a .tar, a brace pattern, a :: list or a "
                        "pipe: / http URL")
    p.add_argument("--out", help=out_help)
    p.add_argument("--batch-size", type=int_at_least(1), default=8, help="rows (--timeline: windows) per forward pass (default 8)")
    p.add_argument("--workers", type=int_at_least(0), default=0, help="loader processes decoding rows (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-partial", action="store_true", help=ALLOW_PARTIAL_HELP)


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """--precision and --compile (predict, eval, embed)."""
    g = p.add_argument_group("speed (avfusion/infer/fast.py)")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default) | bf16: autocast to bfloat16 (CPUs with AVX512-BF16 or AMX, or a GPU) | "
                        "int8: dynamic quantisation of the linear layers (CPU)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model (runs eagerly, with a note, if compiling fails)")


MODEL_HELP = ("an avfusion model directory, a released model's name (avfusion models --pretrained; downloaded and "
              "cached once) or hf-hub:ORG/NAME")


def load_for_inference(model: str | Path, device: Any, args: argparse.Namespace) -> Any:
    """The model ``model`` names (a directory, a release name or hf-hub:, avfusion.zoo.resolve_model) on
    ``device``, prepared at ``args.precision`` (and compiled with ``args.compile``); a precision this
    machine cannot run is refused before anything is downloaded or loaded."""
    from avfusion.infer.fast import check_precision, prepare_for_inference
    from avfusion.models.pretrained import load_pretrained
    from avfusion.zoo import resolve_model

    check_precision(args.precision, device)
    model = load_pretrained(resolve_model(model), map_location=device)
    return prepare_for_inference(model, args.precision, args.compile)


def corpus_device(spec: str) -> tuple[Any, Any]:
    """(device, DistInfo): join the torchrun group when there is one (gloo on CPU, NCCL on GPU),
    then resolve ``spec`` for this rank (``auto`` / ``cuda``: cuda:LOCAL_RANK)."""
    from avfusion.utils.distributed import init_distributed

    info = init_distributed(resolve_device(spec).type)
    return resolve_device(spec, info.local_rank), info


def report(summary: Any, command: str, info: Any) -> None:
    """Rank 0: the summary on stdout, and the rows that could not be used on stderr."""
    if not info.is_main:
        return
    print(summary.describe())
    if summary.errors and not summary.already_complete:
        print(f"avfusion {command}: {summary.errors} of {summary.rows} row(s) could not be used "
              f"(listed in {summary.out})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="avfusion predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="*", help="video files (anything PyAV decodes)")
    p.add_argument("--model", help=f"{MODEL_HELP} (default: {DEFAULT_MODEL}, what `make demo` trains)")
    p.add_argument("--top-k", type=int_at_least(1), default=5)
    p.add_argument("--clips", type=int_at_least(1), help="clips averaged per file or row (default 4)")
    p.add_argument("--device", type=device_arg, default="auto",
                   help="auto (default: the GPU when there is one) | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    add_corpus_args(p, "with --data: the JSON lines file to write (resumed if a run was cut short)")
    add_inference_args(p)
    t = p.add_argument_group("timeline")
    t.add_argument("--timeline", action="store_true", help="answer every window of the whole file")
    t.add_argument("--window", type=positive_float, help="window length in seconds (default: the model's clip)")
    t.add_argument("--hop", type=positive_float, help="seconds between window starts (default: half a window)")
    t.add_argument("--plot", metavar="FILE", help="with --timeline: a .png or .html picture of the scores over time")
    args = parse_args(p, argv)
    if args.data is None and not args.videos:
        p.error("the following arguments are required: videos (or --data SOURCE --out FILE)")
    if args.data is not None and args.videos:
        p.error("give video files or --data SOURCE, not both")
    if args.data is not None and not args.out:
        p.error("--data needs --out (the JSON lines file to write)")
    if args.data is None and args.out:
        p.error("--out goes with --data (the answers for video files are printed)")
    if args.data is not None and args.json:
        p.error("--json is for video files (--data always writes JSON lines)")
    if not args.timeline:
        for flag in ("window", "hop", "plot"):
            if getattr(args, flag) is not None:
                p.error(f"--{flag} goes with --timeline")
    else:
        if args.clips is not None:
            p.error("--clips does not apply to --timeline (each window is scored by the clips that cover it)")
        if args.plot is not None and (args.data is not None or len(args.videos) != 1):
            p.error("--plot draws one video's timeline: give one video file")
        if args.plot is not None and not args.plot.lower().endswith((".png", ".html", ".htm")):
            p.error(f"--plot {args.plot}: give a .png or .html file")
        if args.data is not None and args.workers:
            p.error("--workers does not apply to --timeline (each file is decoded chunk by chunk)")
    args.clips = args.clips or 4
    if args.model:
        from avfusion.zoo import resolve_model

        model_dir = resolve_model(args.model)  # a release is downloaded / converted here, once
    else:
        model_dir = DEFAULT_MODEL
        if not model_dir.is_dir():
            raise InputError(f"no model directory {str(model_dir)!r}: pass --model DIR or a released model's name "
                             "(avfusion models --pretrained), or run `make demo` to train the default one")
    if args.data is not None:
        return predict_corpus_main(args, model_dir)
    if args.timeline:
        return timeline_main(args, model_dir)

    from avfusion.infer.predict import predict_file

    model = load_for_inference(model_dir, resolve_device(args.device), args)
    status = 0
    for video in args.videos:
        try:
            res = predict_file(model, video, args.top_k, args.clips)
        except (UserError, OSError) as e:  # one bad file does not stop the rest: it is named, exit 1
            res = {"path": video, "error": str(e)}
            status = 1
        if args.json:
            print(json.dumps(res, allow_nan=False))  # predict_file made the scores strict JSON
            continue
        print(f"{video}:" + _speed_note(res.get("inference")))
        if "error" in res:
            print(f"  error: {res['error']}")
            continue
        for note in res["notes"]:
            print(f"  note: {note}")
        for output, labels in res["outputs"].items():
            top = ", ".join(f"{e.get('head', '') + ':' if 'head' in e else ''}{e['label']} "
                            + ("n/a" if e["score"] is None else f"{e['score']:.2f}") for e in labels)
            print(f"  {output:<7} {top}")
    return status


def _speed_note(inference: dict[str, str] | None) -> str:
    """" (bf16, compiled)" after a file's name when it ran other than fp32 eagerly."""
    if not inference or inference == {"precision": "fp32", "compile": "off"}:
        return ""
    return f" ({inference['precision']}{', compile ' + inference['compile'] if inference['compile'] != 'off' else ''})"


def timeline_main(args: argparse.Namespace, model_dir: Path) -> int:
    from avfusion.infer.over_time import check_window, describe, plot_timeline, timeline_file

    model = load_for_inference(model_dir, resolve_device(args.device), args)
    check_window(model.cfg, args.window, args.hop)  # once, before the files (exit 2)
    status = 0
    for video in args.videos:
        try:
            result = timeline_file(model, video, args.window, args.hop, args.top_k, args.batch_size)
        except (UserError, OSError) as e:  # one bad file does not stop the rest: it is named, exit 1
            status = 1
            if args.json:
                print(json.dumps({"file": video, "error": str(e)}))
            else:
                print(f"{video}:\n  error: {e}")
            continue
        if args.json:
            print(json.dumps(result.to_json(), allow_nan=False))
        else:
            print("\n".join(describe(result)))
        if args.plot:
            where = plot_timeline(result, args.plot)
            print(f"plot: {where}", file=sys.stderr if args.json else sys.stdout)
    return status


def predict_corpus_main(args: argparse.Namespace, model_dir: Path) -> int:
    from avfusion.data.sources import resolve
    from avfusion.infer.corpus import predict_corpus
    from avfusion.utils.distributed import cleanup

    source = resolve(args.data, args.allow_partial)  # a bad source is one line before the model loads
    if args.timeline and source.manifest is None:
        raise InputError(f"{args.data}: --timeline needs the media files (a manifest); shards hold prepared clips")
    device, info = corpus_device(args.device)
    try:
        model = load_for_inference(model_dir, device, args)
        if args.timeline:
            from avfusion.infer.over_time import timeline_corpus

            summary = timeline_corpus(model, source, args.out, args.window, args.hop, args.top_k, args.batch_size,
                                      info, progress=not args.no_progress)
        else:
            summary = predict_corpus(model, source, args.out, args.top_k, args.clips, args.batch_size,
                                     args.workers, info, progress=not args.no_progress)
        report(summary, "predict", info)
    finally:
        cleanup(info)
    return 0
