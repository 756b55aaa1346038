"""Command-line value checks shared by the subcommands.

A bad value is refused naming the flag before any work starts: through argparse (usage and one
error line, exit 2) for flag types, or as a :class:`~avfusion.errors.ConfigError` (one line,
exit 2) for ``key=value`` overrides.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from avfusion.errors import ConfigError
from avfusion.utils.dataclass_config import parse_overrides


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


def device_arg(text: str) -> str:
    """An argparse ``type`` for ``--device``: auto, cpu, cuda or cuda:N, and CUDA only where there is one."""
    import torch

    if text == "auto":
        return text
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no CUDA device")
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def parse_key_values(pairs: Iterable[str]) -> dict[str, Any]:
    """``["fusion_layer=4", "image_size=[112,112]"]`` -> {"fusion_layer": 4, ...}; values are YAML.

    A pair without ``=`` or a value that is not YAML is a ConfigError naming the pair (the parser
    underneath raises a plain ValueError or a multi-line YAML error)."""
    pairs = list(pairs)
    for pair in pairs:
        try:
            parse_overrides([pair])
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{e}; write key=value, e.g. fusion_layer=4") from None
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"override {pair!r}: the value is not valid YAML ({problem})") from None
    return parse_overrides(pairs)
