"""The daemon boundary's one mapping between JSON and the result dataclasses, both ways.

``to_json(obj)`` and ``from_json(cls, data)`` are driven by the dataclass's fields and type hints
(nested dataclasses, lists, tuples, dicts, optionals and unions of them), so the daemon's answers and
``RemoteLibrary``'s results are the same types with no hand-written copy per type. Keys the class
does not have are ignored (a newer daemon may send more); missing ones take the field's default.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from mediasearch.errors import MediaSearchError

T = TypeVar("T")


class WireError(MediaSearchError):
    """An answer that does not have the shape of the type it should be."""


def to_json(obj: Any) -> Any:
    """``obj`` as JSON values: dataclasses as objects of their fields, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_json(x) for x in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    return obj


def from_json(cls: type[T], data: Any) -> T:
    """``data`` (decoded JSON) as an instance of the dataclass ``cls``, checked against its type hints."""
    return typing.cast(T, _value(cls, data, cls.__name__))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise WireError(f"{where}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)
    given = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            given[f.name] = _value(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise WireError(f"{where}: {f.name} is missing")
    return cls(**given)


def _value(hint: Any, data: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return data
    if origin in (typing.Union, types.UnionType):
        return _union(args, data, where)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _dataclass(hint, data, where)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(data, list | tuple):
            raise WireError(f"{where}: expected a list, got {type(data).__name__}")
        item = args[0] if args else Any
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_value(a, d, f"{where}[{i}]") for i, (a, d) in enumerate(zip(args, data, strict=True)))
        items = [_value(item, d, f"{where}[{i}]") for i, d in enumerate(data)]
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(data, Mapping):
            raise WireError(f"{where}: expected an object, got {type(data).__name__}")
        value = args[1] if args else Any
        return {str(k): _value(value, v, f"{where}.{k}") for k, v in data.items()}
    return _scalar(hint, data, where)


def _union(args: tuple[Any, ...], data: Any, where: str) -> Any:
    if data is None and type(None) in args:
        return None
    errors = []
    for arg in (a for a in args if a is not type(None)):
        try:
            return _value(arg, data, where)
        except WireError as exc:
            errors.append(str(exc))
    raise WireError(errors[0] if errors else f"{where}: unexpected {data!r}")


def _scalar(hint: Any, data: Any, where: str) -> Any:
    if hint is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    if hint is int and isinstance(data, int) and not isinstance(data, bool):
        return data
    if hint in (str, bool) and type(data) is hint:
        return data
    if hint is type(None) and data is None:
        return None
    raise WireError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {data!r}")
