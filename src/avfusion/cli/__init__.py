"""The `avfusion` command line: one module per subcommand, each with `main(argv) -> int`.

Subcommands are imported lazily so that `avfusion models` does not pay for PyAV or the
training stack, and each `main(argv)` can be called directly from tests.
"""

from __future__ import annotations

import importlib
import os
import sys

from avfusion.errors import UserError

# name -> (module, one-line help). A subcommand is listed here only once it works.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("avfusion.cli.models", "list the registered models"),
    "flops": ("avfusion.cli.flops", "parameters and GFLOPs of one forward pass"),
    "demo": ("avfusion.cli.demo", "the end-to-end demo"),
    "train": ("avfusion.cli.train", "supervised training (YAML config or flags; resumable; torchrun)"),
    "pretrain": ("avfusion.cli.pretrain", "Zorro's contrastive self-supervised training"),
    "eval": ("avfusion.cli.eval", "evaluate a model directory on a manifest (multi-view, per output)"),
    "predict": ("avfusion.cli.predict", "top labels for video files"),
    "embed": ("avfusion.cli.embed", "pooled features of every row of a corpus (resumable; torchrun)"),
    "validate": ("avfusion.cli.validate", "check a manifest's rows: files, streams, durations, labels, ids"),
    "prepare": ("avfusion.cli.prepare", "decode a manifest once into WebDataset .tar shards"),
    "convert": ("avfusion.cli.convert", "official MBT / ImageNet ViT weights -> an avfusion model directory"),
    "bench": ("avfusion.cli.bench", "speed, peak memory, FLOPs and MFU per model"),
    "export": ("avfusion.cli.export", "a model directory -> one .pt2 (torch.export) or .onnx file that runs without avfusion"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: avfusion <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`avfusion <command> --help` for a command's options; `avfusion --version` for the version."]
    return "\n".join(lines)


def _one_line(e: BaseException) -> str:
    """The message on one line (a message quoting a file's text may hold newlines)."""
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug (anywhere) shows the traceback of an expected failure; no subcommand uses the name.
    debug = "--debug" in argv or bool(os.environ.get("AVFUSION_DEBUG"))
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version", "version"):
        import torch

        from avfusion import __version__

        print(f"avfusion {__version__} (torch {torch.__version__}, Python {sys.version.split()[0]})")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"avfusion: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt as e:
        if debug:
            raise
        # An interruption that says more (the demo's, the trainer's) carries its message and its
        # exit status (128 + the signal: 143 for SIGTERM); a plain Ctrl-C is 130.
        print(f"avfusion {name}: {_one_line(e) if str(e) else 'interrupted'}", file=sys.stderr)
        return int(getattr(e, "exit_status", 130))
    except (UserError, OSError) as e:
        # An expected failure (bad input or value, a damaged or missing file, a full disk, a busy
        # run folder): one clear line, exit 2. Anything else, a plain ValueError or KeyError
        # included, is a bug and keeps its traceback.
        if debug:
            raise
        print(f"avfusion {name}: error: {_one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
