"""The lowest layer of validation: the error a refused config raises, the helpers that name a key and its value,
a typed dataclass built from a mapping (unknown keys and wrong types refused), and YAML reading with floats like
1e-3 read as floats.  Both the config (hiso/config.py) and the tasks, models
and methods it validates import from here, so none of them imports another to check a value.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config that cannot be run: unknown key, wrong type or value out of range."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


# YAML 1.1 number forms that PyYAML reads silently and YAML 1.2 reads otherwise (or as strings): `010` is 8,
# `0x10` 16, `0b101` 5, `1:30` 90 (base 60), `1_000` 1000.  A config refuses them, naming the key and both
# readings; plain decimals (`10`, `-3`, `1.5e-3`) are what every YAML reads alike.
_PLAIN_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _yaml11_number(loader, key, node, seen=None) -> None:
    """Walk a composed document; `key` is the dotted path of `node` ("" at the root).  An aliased node is walked
    once (an anchor may even contain its own alias)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _yaml11_number(loader, f"{key}[{i}]", item, seen)
        return
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            _yaml11_number(loader, f"{key}.{name}" if key else name, key_node, seen)
            _yaml11_number(loader, f"{key}.{name}" if key else name, value_node, seen)
        return
    if not isinstance(node, yaml.ScalarNode) or node.tag not in _NUMBER_TAGS or node.style:
        return
    text = node.value
    if node.tag.endswith(":int") and _PLAIN_INT.match(text):
        return
    if node.tag.endswith(":float") and "_" not in text and ":" not in text:
        return
    reading = loader.construct_object(node)
    mark = node.start_mark
    raise ConfigError(f"{key}: {text!r} at line {mark.line + 1}, column {mark.column + 1} is a YAML 1.1 number "
                      f"form that reads as {reading!r} here and differently under YAML 1.2 (a leading zero, "
                      "0x/0o/0b, a base-60 colon or an underscore); write the plain decimal you mean, or quote it "
                      "for a string")


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges the anchor's keys; keys written beside it override them (merge keys)
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            mark = key_node.start_mark
            raise ConfigError(f"a {type(key).__name__} used as a mapping key at line {mark.line + 1}, column "
                              f"{mark.column + 1}; keys must be names") from None
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(f"duplicate key '{key}' at line {mark.line + 1}, column {mark.column + 1} (a second "
                              "entry would silently replace the first)")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_yaml(text: str, source: str = "<text>", key: str | None = None) -> Any:
    """YAML with floats like 1e-3 read as floats (merge keys `<<` supported); duplicate keys, YAML 1.1 number
    forms and syntax errors are ConfigErrors that name the place (file:line:column).  `key`: the dotted key a lone value (a
    --set's) is assigned to, checked like a mapping's values."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _yaml11_number(loader, key or "", node)
        return loader.construct_document(node)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()


def require(key: str, value, ok: bool, what: str) -> None:
    """Refuse `key: value` unless `ok`; `what` says what is accepted (e.g. "a finite number > 0")."""
    if not ok:
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def finite_positive(key: str, value, allow_inf: bool = False) -> None:
    ok = value > 0 and (math.isfinite(value) or (allow_inf and value == math.inf))
    require(key, value, ok, "> 0" + (" (or .inf)" if allow_inf else " and finite"))


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_value(value, inner[0], key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def build(cls, data: Any, prefix: str = ""):
    """Instantiate dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{full}'{hint}")
        kwargs[key] = _check_value(value, hints[key], full)
    return cls(**kwargs)


def typed_overrides(config: dict, given, schema: dict) -> None:
    """Snakemake reads `--config KEY=VALUE` with YAML's BaseLoader, which types only a top-level value: inside a
    list or a mapping every scalar stays a string (`seeds=[0,1]` gives ['0', '1']).  For the keys given there, each
    such string is read as a tier file would be (load_yaml) where the tier's JSON schema wants an integer, a number
    or a boolean there and the string is one (booleans: true or false only, never YAML 1.1's yes/on); any other
    string, such as `010`, is left for the schema to refuse, naming the key."""
    for key in given:
        if key in config and key in schema.get("properties", {}):
            config[key] = _typed(config[key], schema["properties"][key])


def _typed(value, schema: dict):
    branches = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
    types_ = {t for b in branches for t in ([b["type"]] if isinstance(b.get("type"), str) else b.get("type", []))}
    if isinstance(value, str) and types_ & {"integer", "number", "boolean"}:
        try:
            read = load_yaml(value)
        except ConfigError:
            return value
        number = isinstance(read, (int, float)) and not isinstance(read, bool)
        fits = {"boolean": isinstance(read, bool) and value.lower() in ("true", "false"),
                "integer": number and isinstance(read, int), "number": number}
        return read if any(fits.get(t, False) for t in types_) else value
    if isinstance(value, list):
        items = next((b["items"] for b in branches if isinstance(b.get("items"), dict)), None)
        return [_typed(v, items) for v in value] if items else value
    if isinstance(value, dict):
        props = {k: s for b in branches for k, s in b.get("properties", {}).items()}
        extra = next((b["additionalProperties"] for b in branches if isinstance(b.get("additionalProperties"), dict)),
                     {})
        return {k: _typed(v, props.get(k, extra)) for k, v in value.items()}
    return value
