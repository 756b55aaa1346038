"""Typed dataclass configs from YAML / dicts with dotted overrides (dinov2's habit, no exec).

``build(TrainConfig, yaml_dict, ["optim.lr=0.1", "run.seed=3"])`` builds the nested dataclasses,
refuses unknown keys (naming the valid ones), parses override values as YAML scalars, and checks
scalar fields against their annotated types (``1e-3``, which YAML 1.1 reads as a string, becomes
the float a ``float`` field expects; ``"abc"`` for a float is refused naming the key).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "model_overrides={fusion_layer: 4}"]`` -> {"optim.lr": 0.1, ...}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {pair!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"override {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def from_dict(cls: type[T], d: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are an error."""
    d = dict(d or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {[where + k for k in unknown]}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        sub = _dataclass_type(hints[name])
        if sub is not None and isinstance(value, Mapping):
            value = from_dict(sub, value, f"{where}{name}.")
        else:
            value = coerce_scalar(value, hints[name], where + name)
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_type(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def coerce_scalar(value: Any, hint: Any, key: str) -> Any:
    """Check / convert a value for a ``bool``, ``int``, ``float`` or ``str`` field (optionally ``| None``).

    Other annotations (tuples, dicts, literals) pass through unchanged.
    """
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    if value is None and type(None) in args:
        return None
    scalar = [a for a in args if a in (bool, int, float, str)]
    if len(scalar) != 1 or len(args) - (type(None) in args) != 1:
        return value
    want = scalar[0]
    if want is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string
        except ValueError:
            pass
    elif want is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif want is int and isinstance(value, float) and value.is_integer():
        return int(value)
    elif want in (bool, str) and isinstance(value, want):
        return value
    elif want is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a name or path YAML read as a number ("run.out=2026")
    raise ValueError(f"config key {key!r} expects {want.__name__}, got {value!r} ({type(value).__name__})")


def build(cls: type[T], base: Mapping[str, Any] | None = None, overrides: Iterable[str] = ()) -> T:
    d = to_plain(dict(base or {}))
    for key, value in parse_overrides(overrides).items():
        set_dotted(d, key, value)
    return from_dict(cls, d)


def load_yaml(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        d = yaml.safe_load(f) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a config file must hold a mapping, got {type(d).__name__}")
    return d


def to_plain(obj: Any) -> Any:
    """Dataclasses / tuples -> dicts / lists (for YAML and JSON)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
