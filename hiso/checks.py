"""The lowest layer of validation: the error a refused config raises, the helpers that name a key and its value,
and YAML reading with floats like 1e-3 read as floats.  Both the config (hiso/config.py) and the tasks, models
and methods it validates import from here, so none of them imports another to check a value.
"""
from __future__ import annotations

import math
import re
from typing import Any

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


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise ConfigError(f"duplicate key '{key}' at line {mark.line + 1}, column {mark.column + 1} (a second "
                              "entry would silently replace the first)")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_yaml(text: str, source: str = "<text>") -> Any:
    """YAML with floats like 1e-3 read as floats; duplicate keys and syntax errors are ConfigErrors that name
    the place (file:line:column)."""
    try:
        return yaml.load(text, Loader=_Loader)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None


def require(key: str, value, ok: bool, what: str) -> None:
    """Refuse `key: value` unless `ok`; `what` says what is accepted (e.g. "a finite number > 0")."""
    if not ok:
        raise ConfigError(f"{key} must be {what}, got {value!r}")


def finite_positive(key: str, value, allow_inf: bool = False) -> None:
    ok = value > 0 and (math.isfinite(value) or (allow_inf and value == math.inf))
    require(key, value, ok, "> 0" + (" (or .inf)" if allow_inf else " and finite"))
