"""The one query specification: every field a query may have, its type, default, limits and messages.

Every front end reads it: the options of ``mediasearch query`` and ``similar`` (``cli/query_options.py``),
the HTTP request models (``serve/schemas.py``), the MCP tools' input schemas (``serve/mcp.py``) and
:meth:`mediasearch.Library.query`'s keywords (checked against it by a test). A new field is added here
once. Plain data and the checks that go with it: nothing heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediasearch.errors import QueryError

# The kinds of value a field holds; each front end maps them to its own types.
TEXT, PATH, INT, FLOAT, BOOL, CHOICE, DATE, NEAR = "text", "path", "int", "float", "bool", "choice", "date", "near"
MAX_TEXT = 1000  # characters of one text (CLIP reads 77 tokens of it anyway)
MAX_ITEMS = 32  # values of one repeatable field
MAX_LIMIT = 10_000
WEIGHT_LIMIT = 100.0  # beyond it a sum of unit vectors may overflow: the query could not be normalised


class SpecError(QueryError):
    """A value a query field does not accept; ``field`` names it, so each front end can show its own name."""

    def __init__(self, field: QueryField, message: str) -> None:
        super().__init__(message.format(name=field.name))
        self.field = field
        self.template = message

    def named(self, name: str) -> str:
        """The message with the field called ``name`` (``--type`` on the command line)."""
        return self.template.format(name=name)


@dataclass(frozen=True)
class QueryField:
    """One field of a query: what it holds, its limits, and how it is shown on each front end."""

    name: str  # the keyword of Library.query, the JSON key of the HTTP body, the MCP argument
    kind: str  # TEXT, PATH, INT, FLOAT, BOOL, CHOICE, DATE or NEAR
    help: str
    default: Any = None
    repeatable: bool = False  # a list of values (the CLI repeats the option)
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    max_items: int | None = None  # for a repeatable field
    max_length: int | None = None  # characters, for TEXT and PATH
    flag: str | None = None  # the CLI option when it is not --name (--type for kind)
    short: str | None = None  # a one-letter CLI alias
    similar: bool = False  # also a field of `similar` (the filters, the limit and the order)
    old_names: tuple[str, ...] = ()  # names an earlier release's HTTP API used, still accepted there

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        """Raise :class:`SpecError` unless ``value`` (already of the field's type, or None) is allowed."""
        if value is None:
            return
        if self.repeatable:
            if self.max_items is not None and len(value) > self.max_items:
                raise SpecError(self, f"{{name}} takes at most {self.max_items} values")
            for item in value:
                self._check_one(item)
        else:
            self._check_one(value)

    def _check_one(self, value: Any) -> None:
        if self.kind == CHOICE and value not in self.choices:
            raise SpecError(self, f"{{name}} must be one of {', '.join(self.choices)}")
        if self.kind in (INT, FLOAT) and not isinstance(value, bool) and isinstance(value, int | float):
            low = -math.inf if self.minimum is None else self.minimum
            high = math.inf if self.maximum is None else self.maximum
            if not (math.isfinite(value) and low <= value <= high):
                raise SpecError(self, f"{{name}} must be between {_num(self.minimum)} and {_num(self.maximum)}")
        if self.kind in (TEXT, PATH) and isinstance(value, str):
            if not value:
                raise SpecError(self, "{name} must not be empty")
            if self.max_length is not None and len(value) > self.max_length:
                raise SpecError(self, f"{{name}} is longer than {self.max_length} characters")


def _num(value: float | None) -> str:
    if value is None:
        return "any"
    return str(int(value)) if float(value).is_integer() else str(value)


def _text(name: str, help: str, **kw: Any) -> QueryField:
    return QueryField(name, TEXT, help, max_length=MAX_TEXT, **kw)


def _texts(name: str, help: str, **kw: Any) -> QueryField:
    return QueryField(name, TEXT, help, default=(), repeatable=True, max_items=MAX_ITEMS, max_length=MAX_TEXT, **kw)


QUERY_FIELDS: tuple[QueryField, ...] = (
    # what to look for
    _text("text", "what to look for, in words ('a dog on a beach'); 'w:text' weighs it"),
    QueryField("image", PATH, "an example image or video file (repeatable)", default=(), repeatable=True,
               max_items=MAX_ITEMS, max_length=4096),
    _texts("also", "more text to add ('w:text' weighs it)", flag="--and"),
    _texts("negatives", "text to subtract ('w:text' weighs it)", flag="--not"),
    QueryField("not_image", PATH, "an image to subtract (repeatable)", default=(), repeatable=True,
               max_items=MAX_ITEMS, max_length=4096),
    QueryField("weight", FLOAT, "the weight of text (default 1)", minimum=-WEIGHT_LIMIT, maximum=WEIGHT_LIMIT),
    QueryField("raw", BOOL, "embed the text as is, without prompt templates", default=False),
    QueryField("literal", BOOL, "take the text as it is: no dates, places or people read out of it", default=False),
    QueryField("explain", BOOL, "show how the text was read (dates, place, people...) instead of searching",
               default=False),
    # how many, in which order
    QueryField("limit", INT, "how many items, at most", default=10, minimum=1, maximum=MAX_LIMIT, short="-k",
               similar=True),
    QueryField("min_score", FLOAT, "only items with a calibrated score (0..1) at least this high",
               minimum=0.0, maximum=1.0),
    QueryField("sort", CHOICE, "the order: score, date (newest first) or oldest (oldest first)", default="score",
               choices=("score", "date", "oldest"), similar=True),
    # filters
    QueryField("kind", CHOICE, "only images, or only videos", choices=("image", "video"), flag="--type",
               similar=True),
    QueryField("folder", PATH, "only items under this folder", max_length=4096, flag="--path", similar=True,
               old_names=("path_prefix",)),
    _texts("tags", "only items with all these tags", flag="--tag", similar=True),
    QueryField("after", DATE, "taken on or after: YYYY, YYYY-MM or YYYY-MM-DD", similar=True),
    QueryField("before", DATE, "taken before: YYYY, YYYY-MM or YYYY-MM-DD", similar=True),
    QueryField("near", NEAR, "taken within KM of a point: 'LAT,LON,KM' (EXIF GPS)", similar=True),
    _text("camera", "only from a camera with these words ('canon')", similar=True),
    _text("place", "only items taken in this place (a city, region or country)", similar=True),
    _texts("person", "only items in which this person is (repeatable: all of them)", similar=True),
    _texts("ocr", "only items whose recognised text holds these words", similar=True),
)

FIELDS: dict[str, QueryField] = {f.name: f for f in QUERY_FIELDS}
SIMILAR_FIELDS: tuple[QueryField, ...] = tuple(f for f in QUERY_FIELDS if f.similar)


def defaults(fields: tuple[QueryField, ...] = QUERY_FIELDS) -> dict[str, Any]:
    """Every field's default value."""
    return {f.name: f.default for f in fields}


def validate(values: Mapping[str, Any], fields: tuple[QueryField, ...] = QUERY_FIELDS) -> None:
    """Raise :class:`SpecError` for the first value a field refuses (unknown names are a QueryError)."""
    known = {f.name: f for f in fields}
    for name, value in values.items():
        if name not in known:
            raise QueryError(f"unknown query field {name!r}")
        known[name].check(value)
