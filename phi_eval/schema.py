"""Typed YAML sections: build frozen dataclasses from parsed YAML, naming the field at fault.

One reader for every YAML file phi-eval takes (recipes, zoo cards): a dataclass lists the keys a
section may hold, their types (int, float, str, bool, dict, lists, optional values, nested sections)
and defaults; an unknown key, a missing required key or a wrong type is a UsageError from the
caller's `fail(field, problem)`, which adds the file and the fix."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Callable, NoReturn


class SchemaReader:
    def __init__(self, fail: Callable[[str, str], NoReturn], root: str = "the file"):
        self.fail, self.root = fail, root

    def build(self, cls, raw: dict, prefix: str = ""):
        """`cls` from the mapping `raw`; `prefix` names the section in messages ("model.")."""
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        where = prefix.rstrip(".") or self.root
        for key in raw:
            if key not in fields:
                self.fail(f"{prefix}{key}", f"is not a known key of {where} (known: {', '.join(fields)})")
        missing = [k for k, f in fields.items() if k not in raw and is_required(f)]
        if missing:
            self.fail(f"{prefix}{missing[0]}", "is required")
        return cls(**{k: self.coerce(raw[k], hints[k], f"{prefix}{k}") for k in raw})

    def coerce(self, value, hint, name: str):
        options = typing.get_args(hint) if is_union(hint) else (hint,)
        if value is None:
            if type(None) in options:
                return None
            self.fail(name, f"must be {describe(hint)}, not empty")
        for option in options:
            if option is type(None):
                continue
            ok, result = self._try(value, option, name)
            if ok:
                return result
        self.fail(name, f"must be {describe(hint)} (got {value!r})")

    def _try(self, value, hint, name):
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                return False, None
            return True, self.build(hint, value, name + ".")
        if typing.get_origin(hint) is list:
            if not isinstance(value, list):
                return False, None
            item_hint = typing.get_args(hint)[0]
            return True, [self.coerce(v, item_hint, f"{name}[{i}]") for i, v in enumerate(value)]
        if hint is bool:
            return isinstance(value, bool), value
        if hint is int:  # bool is an int in Python; a count must not accept true/false
            return isinstance(value, int) and not isinstance(value, bool), value
        if hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True, float(value)
            if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
                try:
                    return True, float(value)
                except ValueError:
                    return False, None
            return False, None
        if hint is str:
            return isinstance(value, str), value
        if hint is dict:
            return isinstance(value, dict), value
        raise TypeError(f"unsupported schema type {hint!r}")


def describe(hint) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is list:
        return f"a list of {describe(typing.get_args(hint)[0]).split(' ', 1)[1]}s"
    if dataclasses.is_dataclass(hint):
        return "a section (a mapping)"
    return " or ".join(describe(a) for a in typing.get_args(hint) if a is not type(None))


def is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
