"""Typed dataclass configs from YAML / dicts with dotted overrides (dinov2's habit, no exec).

``build(TrainConfig, yaml_dict, ["optim.lr=0.1", "run.seed=3"])`` builds the nested dataclasses,
refuses unknown keys (naming the valid ones), parses override values as YAML scalars, and checks
scalar fields against their annotated types (``1e-3``, which YAML 1.1 reads as a string, becomes
the float a ``float`` field expects; ``"abc"`` for a float is refused naming the key).

Every problem is a :class:`~avfusion.errors.ConfigError` (a ``ValueError``) whose one-line message
names the file, line and column, or the key and the value.

YAML anchors and aliases are allowed, but a document whose aliases would expand it beyond
``MAX_NODES`` nodes (an "alias bomb": 400 bytes that expand to billions of values) or refer to
themselves is refused while it is parsed, before anything is built from it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from avfusion.errors import ConfigError

T = TypeVar("T")

# Nodes a config document may expand to, aliases counted at every use: a real config has hundreds.
MAX_NODES = 100_000


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that measures what the aliases expand to before anything is constructed."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes ``node`` stands for once every alias is expanded (each shared node measured once)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ConfigError(f"YAML alias at line {node.start_mark.line + 1} refers to a node that contains it "
                          "(a recursive alias)")
    open_.add(key)
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes, open_) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes, open_) + _expanded_size(v, sizes, open_) for k, v in node.value)
    open_.discard(key)
    if total > MAX_NODES:
        raise ConfigError(f"YAML aliases at line {node.start_mark.line + 1} expand to more than {MAX_NODES} values "
                          "(an alias bomb?); write the values out")
    sizes[key] = total
    return total


def _load(stream: Any) -> Any:
    return yaml.load(stream, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["optim.lr=0.1", "model_overrides={fusion_layer: 4}"]`` -> {"optim.lr": 0.1, ...}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} is not key=value")
        try:
            out[key.strip()] = _load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {pair!r}: the value is not valid YAML ({_yaml_problem(e)})") from None
        except ConfigError as e:
            raise ConfigError(f"override {pair!r}: {e}") from None
    return out


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def from_dict(cls: type[T], d: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are an error."""
    d = dict(d or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        hint, key = hints[name], where + name
        sub = _dataclass_type(hint)
        if sub is not None and (isinstance(value, Mapping) or (value is None and not _optional(hint))):
            value = from_dict(sub, value, f"{key}.")  # an empty section (`run:`) keeps the defaults
        elif sub is not None and value is not None:
            raise ConfigError(f"config key {key!r} must be a mapping (section), got {value!r}")
        else:
            value = _check_container(coerce_scalar(value, hint, key), hint, key)
        kwargs[name] = value
    return cls(**kwargs)


def _optional(hint: Any) -> bool:
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return union and type(None) in typing.get_args(hint)


def _check_container(value: Any, hint: Any, key: str) -> Any:
    """A ``dict[...]`` field takes a mapping (an empty YAML entry: an empty one), a ``list[...]`` or
    ``tuple[...]`` field a sequence; anything else would fail much later, far from its key."""
    origin = typing.get_origin(hint)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
    elif origin in (list, tuple) and not isinstance(value, (list, tuple)):
        raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
    return value


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
    raise ConfigError(f"config key {key!r} expects {want.__name__}, got {value!r} ({type(value).__name__})")


def build(cls: type[T], base: Mapping[str, Any] | None = None, overrides: Iterable[str] = (),
          removed: Mapping[str, str] | None = None) -> T:
    """``cls`` from a mapping and dotted overrides; a key in ``removed`` (dotted -> what replaced
    it; default: the class's ``removed_keys``) is refused naming its replacement."""
    removed = getattr(cls, "removed_keys", {}) if removed is None else removed
    d = to_plain(dict(base or {}))
    for key, value in parse_overrides(overrides).items():
        set_dotted(d, key, value)
    for key, instead in (removed or {}).items():
        section, _, name = key.rpartition(".")
        holder = d.get(section) if section else d
        if isinstance(holder, Mapping) and name in holder:
            raise ConfigError(f"config key {key!r} was removed: use {instead}")
    return from_dict(cls, d)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's top-level mapping; a missing or unreadable file, a YAML syntax error or a
    file that is not a mapping is a ConfigError naming the file (and the line and column)."""
    try:
        with open(path, encoding="utf-8") as f:
            d = _load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r}: YAML syntax error {_yaml_problem(e)}") from None
    except ConfigError as e:
        raise ConfigError(f"config file {str(path)!r}: {e}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of config keys, got {type(d).__name__}")
    return d


def _yaml_problem(e: yaml.YAMLError) -> str:
    """'at line L, column C: what' (1-based) from a PyYAML error, in one line."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = getattr(e, "problem", None) or getattr(e, "context", None) or str(e).splitlines()[0]
    where = f"at line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{what}"


def to_plain(obj: Any) -> Any:
    """Dataclasses / tuples -> dicts / lists (for YAML and JSON)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
