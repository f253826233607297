"""params.yaml, declared once: each section is a dataclass whose fields carry type, range and meaning.

params.yaml holds the values (there are no defaults in code that could drift from it). `section()`
reads one section into its dataclass and turns every problem into one line naming the key:
an unknown or missing key, a wrong type, a value out of range. PyYAML's quirks are handled here
for every section: YAML 1.1 reads `2e-4` as a string (and `dvc exp run -S` may write it so), so a
float field accepts a numeric string; an int field accepts an integral float such as `64.0`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from headtex.io import UserError

T = TypeVar("T")


def param(meaning: str, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
          choices: tuple | None = None, shared: str | None = None) -> Any:
    """A params.yaml key: its one-line meaning and range. `shared="section.key"` reads it from another
    section (declared in dvc.yaml for the stages that use it)."""
    return dataclasses.field(metadata=dict(meaning=meaning, ge=ge, gt=gt, le=le, choices=choices, shared=shared))


def load_params(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found (run from the repository, or pass --params)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error.__class__.__name__})") from None
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected a mapping of sections")
    return params


def section(params: dict[str, Any], name: str, cls: type[T], partial: bool = False) -> T:
    """Build `cls` from params[name] (plus its shared keys), checking every value against its declaration.

    partial: the section holds more keys than `cls` declares (a library reading its part of a stage's
    section, as reconstruct reads the fitting keys of `pafs:`); those are left to their stage to check.
    """
    values = params.get(name)
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UserError(f"params.yaml: [{name}] must be a mapping of keys, got {type(values).__name__}")
    fields = dataclasses.fields(cls)
    own = {f.name for f in fields if not f.metadata.get("shared")}
    unknown = sorted(set(values) - own)
    if unknown and not partial:
        raise UserError(f"params.yaml: unknown key {name}.{unknown[0]} (the keys of [{name}] are {', '.join(sorted(own))})")
    hints = typing.get_type_hints(cls)
    built = {}
    for field in fields:
        key = field.metadata.get("shared") or f"{name}.{field.name}"
        top, _, leaf = key.partition(".")
        holder = values if not field.metadata.get("shared") else (params.get(top) or {})
        if leaf not in holder:
            raise UserError(f"params.yaml: {key} is missing ({field.metadata.get('meaning', '')})")
        built[field.name] = checked(key, holder[leaf], hints[field.name], field.metadata)
    try:
        return cls(**built)
    except ValueError as error:  # a check across keys in __post_init__
        raise UserError(f"params.yaml: [{name}] {error}") from None


def checked(key: str, value: Any, kind: Any, rules: dict | None = None) -> Any:
    """`value` converted to the declared type `kind` and checked against the range rules; else UserError."""
    rules = rules or {}
    try:
        value = _convert(value, kind)
    except (TypeError, ValueError):
        meaning = f" ({rules['meaning']})" if rules.get("meaning") else ""
        raise UserError(f"params.yaml: {key} must be {_describe(kind)}{meaning}, got {value!r}") from None
    problem = _out_of_range(value, rules)
    if problem:
        raise UserError(f"params.yaml: {key} must be {problem}, got {value!r}")
    return value


def _convert(value: Any, kind: Any) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner)
    if kind is Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if kind is int:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        raise TypeError
    if kind is float:
        if isinstance(value, bool) or value is None:
            raise TypeError
        return float(value)  # also "2e-4", which YAML 1.1 reads as a string
    if kind is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin is list:
        if not isinstance(value, list):
            raise TypeError
        return [_convert(v, args[0]) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        return {_convert(k, args[0]): _convert(v, args[1]) for k, v in value.items()}
    raise TypeError(f"unsupported declaration {kind}")


def _describe(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return f"{_describe(inner)} or null"
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return f"a mapping of {_describe(args[0]).removeprefix('a ')} to {_describe(args[1]).removeprefix('a ')}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


def _out_of_range(value: Any, rules: dict) -> str | None:
    if value is None:
        return None
    if rules.get("choices") is not None and value not in rules["choices"]:
        return "one of " + ", ".join(repr(c) for c in rules["choices"])
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, (int, float)) for v in values):
        return None
    for bound, test, words in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                               ("le", lambda v, b: v <= b, "<=")):
        limit = rules.get(bound)
        if limit is not None and not all(test(v, limit) for v in values):
            return f"{words} {limit:g}" + (" (each entry)" if isinstance(value, list) else "")
    return None
