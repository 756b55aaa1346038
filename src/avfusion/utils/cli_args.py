"""Command-line value checks shared by the subcommands.

A bad value is refused naming the flag before any work starts, through argparse (usage and one
error line, exit 2). ``key=value`` overrides are parsed by
:func:`avfusion.utils.dataclass_config.parse_overrides` (a one-line ConfigError).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers >= ``minimum``: ``type=int_at_least(1)`` for a count."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            what = "a positive integer" if minimum == 1 else (
                "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}")
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse ``type`` for a finite number > 0 (a rate, a duration)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def device_arg(text: str) -> str:
    """An argparse ``type`` for ``--device`` (auto, cpu, cuda, cuda:N; CUDA only where there is
    one): checked by :func:`avfusion.utils.device.resolve_device`, returned as written (each
    process resolves it for its own rank)."""
    from avfusion.errors import ConfigError
    from avfusion.utils.device import resolve_device

    try:
        resolve_device(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


# --allow-partial (train, eval, predict --data, embed): avfusion.data.sources.resolve's allow_partial.
ALLOW_PARTIAL_HELP = ("use a shard folder that prepare has not finished, or that lacks shards prepare wrote, as it "
                      "is (refused by default, naming what is missing); config: data.allow_partial")
