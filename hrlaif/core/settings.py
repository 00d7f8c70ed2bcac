"""Typed settings: one dataclass declares a setting once; YAML and the CLI both read it.

    @dataclass
    class PPOConfig(Settings):
        kl_estimator: str = setting("k1", "KL estimator in the reward", choices=("k1", "k3"))
        steps: int = setting(20, "PPO steps", min=1)
        def validate(self):                      # cross-field rules only
            if self.batch_size % self.mini_batch_size:
                raise SettingError("mini_batch_size", "must divide batch_size")

- `from_mapping(PPOConfig, {"steps": 3}, "ppo")` reads a YAML section strictly: an unknown key,
  a missing one, a wrong type or a value out of range is a one-line `UserError` naming `ppo.steps`.
- `add_arguments(parser, PPOConfig)` generates `--steps`, `--kl-estimator` ... (help and default
  from the same field), and `from_args(PPOConfig, args)` builds the config. The CLI text goes
  through the same checks, so a bad value reads `--steps: must be >= 1 (got 0)` where YAML
  says `ppo.steps: must be >= 1 (got 0)`: the same problem, each source's own name.
- Fields marked `pipeline=True` (model paths, output dirs, seed) are filled in by
  `hrlaif run`; a run config that sets them gets an error saying so, the CLI exposes them.
- `add_arguments(parser, JudgeConfig, prefix="judge")` names the flags `--judge-url` ... (dest
  `judge_url`), for a command that takes two configs whose field names would clash.
- A settings dataclass derives from `Settings`: constructing it checks every field, then its
  `validate()` (cross-field rules), so no caller has to. An unknown key or a value off a list of
  choices suggests the nearest valid one (`did you mean 'num_fewshot'?`).
This plays the role of TRL's HfArgumentParser, with YAML as the second source.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import MISSING, field
from typing import Any, Callable

from hrlaif.core.errors import UserError

_NONE_WORDS = {"none", "null", "~"}


class SettingError(UserError):
    """A bad value for one setting; loaders re-raise it with the source's name for the field."""

    def __init__(self, name: str, problem: str):
        self.name, self.problem = name, " ".join(str(problem).split())
        super().__init__(f"{name}: {self.problem}")


class UnknownKeyError(UserError):
    """A mapping key that is no field: `key`, `where` (with its prefix), `allowed`, `nearest`."""
    def __init__(self, key: str, where: str, allowed: list[str]):
        self.key, self.where, self.allowed = key, where, allowed
        self.nearest = nearest(key, allowed)
        hint = f" - did you mean {self.nearest!r}?" if self.nearest else ""
        super().__init__(f"unknown config key {where!r} (allowed here: {', '.join(allowed)}){hint}")


def nearest(word: Any, options) -> str | None:
    """The option closest to a misspelt `word` (difflib), or None when none is close."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return close[0] if close else None


class Settings:
    """Base of a settings dataclass: construction checks every field (type, choices, range, check)
    and then `validate()`, the class's cross-field rules, so every instance is valid."""
    def __post_init__(self) -> None:
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        """Cross-field rules: raise SettingError(field, problem). The per-field rules ran already."""


def setting(default: Any = MISSING, help: str = "", *, default_factory: Callable | None = None,
            choices: tuple | None = None, min: float | None = None, max: float | None = None,
            check: Callable[[Any], str | None] | None = None, pipeline: bool = False,
            cli: bool = True, aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field with its documentation and validation.

    `check(value)` returns a problem text (or None); `pipeline`: set by `hrlaif run`, not by the
    run config; `cli=False`: YAML only (e.g. mappings that read badly as flags); `aliases`: extra
    flags, spelled out (`("--workers",)`), kept for command lines written before the field's name."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "check": check,
            "pipeline": pipeline, "cli": cli, "aliases": tuple(aliases)}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def redeclare(cls, name: str, default: Any = MISSING, *, help: str | None = None, **rules) -> Any:
    """Field `name` of settings dataclass `cls` with another default and/or help, for a subclass
    that shares the field but not its default (`lr: float = redeclare(EngineSettings, "lr", 2e-5)`):
    type and rules stay those of the one declaration unless `rules` (min=, check= ...) say otherwise."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = dict(f.metadata) | ({"help": help} if help is not None else {}) | rules
    if default is MISSING and f.default_factory is not MISSING:  # type: ignore[misc]
        return field(default_factory=f.default_factory, metadata=meta)  # type: ignore[misc]
    return field(default=f.default if default is MISSING else default, metadata=meta)


def fields_of(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return MISSING


# ------------------------------------------------------------------ checks for `check=`

def greater_than(bound: float) -> Callable[[Any], str | None]:
    return lambda v: None if v > bound else f"must be > {bound:g} (got {v:g})"


def less_than(bound: float) -> Callable[[Any], str | None]:
    return lambda v: None if v < bound else f"must be < {bound:g} (got {v:g})"


def existing_file(v: str) -> str | None:
    from pathlib import Path
    return None if Path(v).expanduser().is_file() else f"file not found: {v}"


def existing_dir(v: str) -> str | None:
    from pathlib import Path
    return None if Path(v).expanduser().is_dir() else f"directory not found: {v}"


# ------------------------------------------------------------------ checking one value

def type_name(tp) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp, name: str = "value") -> Any:
    """`value` as type `tp`, strictly (no bool for int, no str for float); SettingError otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, name)
            except SettingError:
                continue
        raise SettingError(name, f"expected {type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise SettingError(name, f"must be one of {', '.join(map(str, typing.get_args(tp)))} (got {value!r})")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise SettingError(name, f"expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SettingError(name, f"expected a list, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingError(name, f"expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {coerce(k, kt, name): coerce(v, vt, f"{name}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise SettingError(name, f"expected a mapping, got {value!r}")
        return from_mapping(tp, value, name)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(name, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise SettingError(name, f"must be a finite number (got {value!r})")
        return float(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingError(name, f"expected true/false, got {value!r}")
        return value
    if tp in (int, str):
        if isinstance(value, bool) or not isinstance(value, tp):
            raise SettingError(name, f"expected {type_name(tp)}, got {value!r}")
        return value
    return value


def check_fields(obj) -> None:
    """Every field of a settings dataclass instance against its own rules (SettingError if not)."""
    for f in fields_of(type(obj)):
        check_field(type(obj), f, getattr(obj, f.name))


def check_field(cls, f: dataclasses.Field, value: Any, name: str | None = None) -> Any:
    """Type, choices, range and custom check of one field's value; returns the coerced value."""
    name = name or f.name
    value = coerce(value, _hints(cls)[f.name], name)
    meta = f.metadata
    if value is None:
        return value
    items = value if isinstance(value, list) else [value]
    if meta.get("choices") is not None:
        for v in items:
            if v not in meta["choices"]:
                close = nearest(v, meta["choices"]) if isinstance(v, str) else None
                hint = f"; did you mean {close!r}?" if close else ""
                raise SettingError(name, f"must be one of {', '.join(map(str, meta['choices']))} (got {v!r}{hint})")
    for v in items:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if meta.get("min") is not None and v < meta["min"]:
                raise SettingError(name, f"must be >= {meta['min']:g} (got {v:g})")
            if meta.get("max") is not None and v > meta["max"]:
                raise SettingError(name, f"must be <= {meta['max']:g} (got {v:g})")
    if meta.get("check") is not None:
        problem = meta["check"](value)
        if problem:
            raise SettingError(name, problem)
    return value


# ------------------------------------------------------------------ YAML (mappings)

def from_mapping(cls, data: dict | None, prefix: str = "", *, base=None, allow_pipeline: bool = False):
    """Build `cls` from a YAML mapping; `base` (an instance) supplies values not given."""
    data = data or {}
    if not isinstance(data, dict):
        raise UserError(f"{prefix or cls.__name__}: expected a mapping of settings, got {data!r}")
    by_name = {f.name: f for f in fields_of(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        f = by_name.get(key)
        if f is None:
            raise UnknownKeyError(str(key), where, sorted(by_name))
        if f.metadata.get("pipeline") and not allow_pipeline:
            raise UserError(f"{where} is set by the pipeline, not in the run config")
        kwargs[key] = check_field(cls, f, value, where)
    missing = [n for n, f in by_name.items() if base is None and n not in kwargs and default_of(f) is MISSING]
    if missing:
        raise UserError("missing field(s) " + ", ".join(f"{prefix}.{n}" if prefix else n for n in missing))
    return build(cls, kwargs, base, lambda name: f"{prefix}.{name}" if prefix else name)


def build(cls, values: dict, base=None, where: Callable[[str], str] = lambda n: n):
    """`cls(**values)` (or `base` with `values` replaced), its rules checked (a `Settings` class
    checks itself on construction; another dataclass's `validate()` is called), with the field
    in an error renamed for the source (`ppo.steps`, `--steps`)."""
    try:
        obj = dataclasses.replace(base, **values) if base is not None else cls(**values)
        if not isinstance(obj, Settings) and hasattr(obj, "validate"):
            obj.validate()
    except SettingError as e:
        raise UserError(f"{where(e.name)}: {e.problem}") from None
    return obj


# ------------------------------------------------------------------ the command line

def flag(name: str, prefix: str = "") -> str:
    return "--" + (f"{prefix}-" if prefix else "") + name.replace("_", "-")


def dest(name: str, prefix: str = "") -> str:
    return f"{prefix.replace('-', '_')}_{name}" if prefix else name


def parse_text(text: str, tp, name: str) -> Any:
    """A CLI string -> a value of `tp`, for `check_field` to judge like a YAML value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        none_words = _NONE_WORDS | ({"auto"} if args == [bool] else set())  # a tri-state: on/off/auto
        if type(None) in typing.get_args(tp) and text.strip().lower() in none_words:
            return None
        for a in args:
            try:
                return coerce(parse_text(text, a, name), a, name)
            except SettingError:
                continue
        return text
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (str,)
        parts = [t.strip() for t in text.split(",") if t.strip()]
        return [parse_text(p, item, name) for p in parts]
    if origin is dict:
        kt, vt = typing.get_args(tp) or (str, str)
        out = {}
        for part in (t.strip() for t in text.split(",") if t.strip()):
            k, sep, v = part.partition("=")
            if not sep:
                raise SettingError(name, f"expected KEY=VALUE pairs, got {part!r}")
            out[k.strip()] = parse_text(v.strip(), vt, name)
        return out
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            return text
    if tp is bool:
        low = text.strip().lower()
        return {"true": True, "yes": True, "on": True, "1": True,
                "false": False, "no": False, "off": False, "0": False}.get(low, text)
    return text


def _fmt_default(v: Any) -> str:
    if v is MISSING:
        return "required"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "none"
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items()) or "none"
    return "none" if v is None else repr(v) if v == "" else str(v)


def add_arguments(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = (),
                  required: tuple[str, ...] = (), group_title: str | None = None, prefix: str = "") -> None:
    """One flag per field of `cls` (help, default and choices from the field); with `prefix`,
    `--{prefix}-{field}` stored as `{prefix}_{field}`."""
    target = parser.add_argument_group(group_title) if group_title else parser
    hints = _hints(cls)
    for f in fields_of(cls):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        tp = hints[f.name]
        help_ = (f.metadata.get("help") or "").replace("%", "%%")  # argparse formats help with %
        default = default_of(f)
        kw: dict[str, Any] = {"dest": dest(f.name, prefix), "default": argparse.SUPPRESS}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw["help"] = f"{help_} (default: {str(default).lower()})"
        else:
            kw["metavar"] = _metavar(tp, f)
            kw["help"] = f"{help_} (default: {_fmt_default(default)})"
        if f.name in required:
            kw["required"], kw["help"] = True, f"{help_} (required)"
        target.add_argument(flag(f.name, prefix), *f.metadata.get("aliases", ()), **kw)


def _metavar(tp, f) -> str:
    if f.metadata.get("choices"):
        return "{" + ",".join(map(str, f.metadata["choices"])) + "}"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and [a for a in typing.get_args(tp) if a is not type(None)] == [bool]:
        return "{on,off,auto}"
    if origin is dict:
        return "K=V,..."
    if origin in (list, tuple):
        return "A,B,..."
    base = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return {int: "N", float: "X", str: "TEXT"}.get(base[0], "VALUE")


def given(args: argparse.Namespace, cls, prefix: str = "") -> dict:
    """{field: checked value} for the flags of `cls` present on the command line."""
    hints = _hints(cls)
    out = {}
    for f in fields_of(cls):
        if not hasattr(args, dest(f.name, prefix)):
            continue
        raw = getattr(args, dest(f.name, prefix))
        name = flag(f.name, prefix)
        value = parse_text(raw, hints[f.name], name) if isinstance(raw, str) and hints[f.name] is not str else raw
        out[f.name] = check_field(cls, f, value, name)
    return out


def from_args(cls, args: argparse.Namespace, base=None, prefix: str = "", **overrides):
    """Build `cls` from parsed flags over `base` (default: the dataclass defaults)."""
    return build(cls, given(args, cls, prefix) | overrides, base, lambda name: flag(name, prefix))
