"""Reading and writing the config dataclasses (`menas.config`): strict reading from YAML-like mappings (`from_dict`),
writing back (`to_dict`, `dump_yaml`), `key.sub=value` overrides (`apply_override`) and YAML files (`load_yaml`).
An unknown key, a value of the wrong type or one outside the allowed set is a one-line `UserError` naming the key,
the value and what is allowed. Generic: it knows no config class (a class whose named `recipe` sets its other
defaults says so with a `recipe_sets_defaults` class attribute and a `preset(name)` classmethod). No torch.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from menas.errors import UserError

T = TypeVar("T")


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin in (tuple, list):
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _convert(where: str, value: Any, hint: Any) -> Any:
    """Checks `value` against a type hint and returns it (floats accept ints; lists become tuples)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _convert(where, value, arg)
            except ValueError:
                continue
    elif origin is Literal:
        if value in typing.get_args(hint) and not isinstance(value, bool):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            item = typing.get_args(hint)[0]
            items = [_convert(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value, where)
    elif hint is type(None):
        if value is None:
            return None
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint in (int, str, bool):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
    else:
        raise TypeError(f"{where}: unsupported config type {hint!r}")
    raise UserError(f"{where}: got {value!r}, allowed: {_type_name(hint)}")


def from_dict(cls: type[T], mapping: Any, where: str = "config") -> T:
    """Builds dataclass `cls` from a mapping, strictly.

    Args:
        cls: a config dataclass (fields may be bool/int/float/str, Literal choices, optional, tuples, or nested
            config dataclasses).
        mapping: e.g. a section of a YAML file; missing keys keep their defaults.
        where: the section name used in error messages, e.g. "train".

    Raises:
        ValueError: one line naming `where.key`, the offending value and what is allowed.
    """
    if not isinstance(mapping, dict):
        raise UserError(f"{where}: got {mapping!r}, allowed: a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(str(k) for k in mapping if k not in names)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}, allowed: {', '.join(names)}")
    values = {key: _convert(f"{where}.{key}", value, hints[key]) for key, value in mapping.items()}
    if getattr(cls, "recipe_sets_defaults", False) and "recipe" in values:
        return dataclasses.replace(cls.preset(values["recipe"]), **values)  # the named recipe, then the keys given
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A YAML-friendly dict of a config dataclass (nested configs become dicts, tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return value

    return plain(cfg)


def apply_override(cfg: T, assignment: str, where: str = "config") -> T:
    """Returns a copy of `cfg` with one `key.sub=value` override applied (the value is parsed as YAML).

    Example: `apply_override(TrainConfig(), "epochs=5")`, or `"train.lr=0.01"` on a config with a `train` section.

    Raises:
        ValueError: malformed assignment, unknown key or a value of the wrong type (one line, naming the key).
    """
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override {assignment!r}: expected key=value, e.g. train.epochs=5")
    value = yaml.safe_load(text) if text.strip() else None
    return _override(cfg, key.strip().split("."), value, where)


def _override(cfg: Any, path: list[str], value: Any, where: str) -> Any:
    data = to_dict(cfg)
    head, rest = path[0], path[1:]
    if head not in data:
        names = ", ".join(f.name for f in dataclasses.fields(cfg))
        raise UserError(f"{where}: unknown key {head!r}, allowed: {names}")
    if rest:
        child = getattr(cfg, head)
        if not dataclasses.is_dataclass(child):
            raise UserError(f"{where}.{head}: got sub-key {'.'.join(rest)!r}, but {head} has no sub-keys")
        data[head] = to_dict(_override(child, rest, value, f"{where}.{head}"))
    else:
        if head == "recipe" and getattr(cfg, "recipe_sets_defaults", False):
            preset = to_dict(cfg.preset(cfg.recipe))  # another recipe: keep only the keys set on top of the old one
            data = {key: v for key, v in data.items() if v != preset[key]}
        data[head] = value
    return from_dict(type(cfg), data, where)


def load_yaml(cls: type[T], path: str | Path, where: str | None = None) -> T:
    """Reads a config dataclass from a YAML file (strictly, see `from_dict`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r}: not found")
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {str(path)!r}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return from_dict(cls, mapping, where or path.name)


def dump_yaml(cfg: Any) -> str:
    """The YAML text of a config dataclass; `from_dict(type(cfg), yaml.safe_load(text)) == cfg`."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
