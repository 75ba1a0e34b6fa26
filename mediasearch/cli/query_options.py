"""The options of `query` and `similar`, made from the one query specification (``queryspec.py``).

:func:`spec_options` adds one Typer option per field to a command; the command receives their values
in ``values`` (the specification's names), checked by the specification: a refused value is a usage
error (exit 2) with the specification's message, naming the option.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from mediasearch import queryspec
from mediasearch.queryspec import QueryField

_F = TypeVar("_F", bound=Callable[..., Any])
_TYPES: dict[str, Any] = {
    queryspec.TEXT: str,
    queryspec.PATH: Path,
    queryspec.INT: int,
    queryspec.FLOAT: float,
    queryspec.BOOL: bool,
    queryspec.CHOICE: str,
    queryspec.DATE: str,
    queryspec.NEAR: str,
}


def option_type(field: QueryField) -> Any:
    """The Python type Typer parses the field's option into."""
    one = _TYPES[field.kind]
    if field.repeatable:
        return list[one]  # type: ignore[valid-type]
    return one if field.default is not None else one | None


def _help(field: QueryField) -> str:
    text = field.help[0].upper() + field.help[1:] + "."
    if field.choices:
        text += f" One of: {', '.join(field.choices)}."
    return text


def _parameter(field: QueryField, argument: bool) -> inspect.Parameter:
    if argument:
        default: Any = typer.Argument(None, metavar=field.name.upper(), help=_help(field), show_default=False)
    elif field.kind == queryspec.BOOL:
        default = typer.Option(False, field.cli_flag, help=_help(field))
    else:
        names = [field.cli_flag, *([field.short] if field.short else [])]
        default = typer.Option(
            [] if field.repeatable else field.default, *names, help=_help(field), show_default=field.default not in
            (None, ())
        )
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=option_type(field))


def spec_options(fields: tuple[QueryField, ...], *, argument: str | None = None) -> Callable[[_F], _F]:
    """Give the command an option per field (``argument``: the field taken as the positional argument);
    it is called with ``values=`` the checked values, by the specification's names."""

    def wrap(fn: _F) -> _F:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "values"]
        added = [_parameter(f, f.name == argument) for f in fields]
        # Click passes every parameter by name: keyword-only, in the order the help shows them.
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {f.name: _value(f, kwargs.pop(f.name, None)) for f in fields}
            _check(values, fields)
            return fn(*args, values=values, **kwargs)

        command.__signature__ = inspect.Signature(keyword[:1] + added + keyword[1:])  # type: ignore[attr-defined]
        hints = {p.name: p.annotation for p in own}
        command.__annotations__ = {**hints, **{p.name: p.annotation for p in added}}
        return command  # type: ignore[return-value]

    return wrap


def _value(field: QueryField, value: Any) -> Any:
    if field.repeatable:
        return tuple(str(v) for v in value or ())
    if isinstance(value, Path):
        return str(value)
    return value


def _check(values: dict[str, Any], fields: tuple[QueryField, ...]) -> None:
    try:
        queryspec.validate(values, fields)
    except queryspec.SpecError as exc:
        raise typer.BadParameter(exc.named(exc.field.cli_flag)) from None
