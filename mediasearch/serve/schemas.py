"""The HTTP API's request and answer models, at module level so that clients and tests can import them.

The query fields of ``QueryRequest`` and ``SimilarRequest`` are generated from the one query
specification (``queryspec.py``): the same names, defaults, limits and messages as the
command line, the MCP tools and ``Library.query``. Imported when the daemon serves (pydantic, no
torch); deliberately without ``from __future__ import annotations``, since pydantic reads the hints.
"""

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
)
from pydantic import model_validator as _model_validator

from mediasearch import queryspec
from mediasearch.queryspec import QueryField
from mediasearch.serve.security import MAX_FRAMES, MAX_LABELS, MAX_TERMS

DATE_PATTERN = r"^[1-9][0-9]{3}(-(0[1-9]|1[0-2]))?$"
MIN_POSITIVE_WEIGHT = 0.001  # a lighter term does not make a query: alone, it could not be normalised
WEIGHT_LIMIT = queryspec.WEIGHT_LIMIT
IMAGE_FORMAT = "mediasearch-image"  # a string format: a JPEG, PNG, WebP, GIF, BMP or TIFF picture in base64


def _date_text(value: str) -> str:
    """A date filter's text: ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (what the schema says, exactly)."""
    if not re.fullmatch(DATE_PATTERN, value):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("a date is YYYY, YYYY-MM or YYYY-MM-DD (or a unix time as a number)") from None
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            raise ValueError("a date is YYYY, YYYY-MM or YYYY-MM-DD (or a unix time as a number)")
    return value


DATE_SCHEMA = WithJsonSchema({
    "anyOf": [
        {"type": "number"},
        {"type": "string", "format": "date"},
        {"type": "string", "pattern": DATE_PATTERN},
        {"type": "null"},
    ],
    "description": "a unix time, or YYYY, YYYY-MM or YYYY-MM-DD (local time)",
})
# A whole number written as a float (``46.0``): JSON Schema's integers include them; no bools.
WHOLE = BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
DATE_CHECK = AfterValidator(lambda v: _date_text(v) if isinstance(v, str) else v)

STRING, NULL = {"type": "string"}, {"type": "null"}
# The requests' rules that span fields, as `if`/`not` (what no request may be): validators read them
# exactly, and client generators, which make a union type of every `anyOf`, leave them alone.
# A text term has a value and no data; an image term a value (a file) or data (its bytes), not both.
TERM_SOURCES: dict[str, Any] = {
    "if": {"properties": {"kind": {"const": "image"}}, "required": ["kind"]},
    "then": {"oneOf": [{"required": ["value"]}, {"required": ["data"]}]},
    "else": {"required": ["value"], "not": {"required": ["data"]}},
}
POSITIVE_TERM: dict[str, Any] = {
    "anyOf": [{"not": {"required": ["weight"]}}, {"properties": {"weight": {"minimum": MIN_POSITIVE_WEIGHT}}}]
}
LIGHT: dict[str, Any] = {"type": "number", "exclusiveMaximum": MIN_POSITIVE_WEIGHT}
# No text that weighs, no example image and no term that weighs: not a query.
NOT_A_QUERY: dict[str, Any] = {
    "properties": {"image": {"maxItems": 0}, "terms": {"not": {"contains": POSITIVE_TERM}}},
    "anyOf": [{"properties": {"text": NULL}}, {"properties": {"weight": LIGHT}, "required": ["weight"]}],
}
NOT_A_TAGGING: dict[str, Any] = {
    "properties": {"labels": {"type": "array"}, "prompts": STRING}, "required": ["labels", "prompts"]
}


# -- the query fields, from the specification -------------------------------------------------------


def _checked(field: QueryField) -> AfterValidator:
    """The specification's own check (and message) for a field."""

    def check(value: Any) -> Any:
        try:
            field.check(value)
        except queryspec.SpecError as exc:
            raise ValueError(str(exc)) from None  # pydantic reports a ValueError as a validation error
        return value

    return AfterValidator(check)


def _bounds(field: QueryField) -> dict[str, Any]:
    """The field's limits as JSON Schema keywords (the check itself is the specification's)."""
    extra: dict[str, Any] = {}
    if field.minimum is not None:
        extra["minimum"] = field.minimum
    if field.maximum is not None:
        extra["maximum"] = field.maximum
    return extra


def _one(field: QueryField) -> Any:
    """The annotation of one value of ``field``."""
    if field.kind in (queryspec.TEXT, queryspec.PATH):
        return Annotated[str, Field(min_length=1, max_length=field.max_length)]
    if field.kind == queryspec.INT:
        return Annotated[int, WHOLE, Field(json_schema_extra=_bounds(field)), _checked(field)]
    if field.kind == queryspec.FLOAT:
        return Annotated[float, Field(json_schema_extra=_bounds(field)), _checked(field)]
    if field.kind == queryspec.BOOL:
        return bool
    if field.kind == queryspec.CHOICE:
        return Literal[field.choices]
    if field.kind == queryspec.NEAR:
        return Near
    raise ValueError(f"no HTTP type for a {field.kind} field")  # DATE is handled by `_annotation`


def _annotation(field: QueryField) -> tuple[Any, Any]:
    """``field`` as a pydantic field: (annotation, FieldInfo) for ``create_model``."""
    about = field.help
    if field.kind == queryspec.DATE:
        return Annotated[float | str | None, DATE_SCHEMA, DATE_CHECK], Field(None, description=about)
    if field.repeatable:
        return list[_one(field)], Field(default_factory=list, max_length=field.max_items, description=about)  # type: ignore[misc]
    if field.old_names:
        names = AliasChoices(field.name, *field.old_names)
        return _one(field) | None, Field(field.default, description=about, validation_alias=names)
    if field.default is None:
        return _one(field) | None, Field(None, description=about)
    return _one(field), Field(field.default, description=about)


def query_fields(fields: tuple[QueryField, ...]) -> dict[str, Any]:
    """The pydantic fields of ``fields``, by name."""
    return {f.name: _annotation(f) for f in fields}


# -- models -------------------------------------------------------------------------------------------


class Term(BaseModel):
    """A text, or an image (a file on the daemon's machine, or its bytes); a negative weight subtracts."""

    model_config = ConfigDict(strict=True, json_schema_extra=TERM_SOURCES)

    kind: Literal["text", "image"] = "text"
    # No default in the schema (a factory's is not shown): a client that sends defaults must not send "".
    value: str = Field(
        default_factory=str, min_length=1, description="the text, or an image file on the daemon's machine"
    )
    data: str = Field(
        default_factory=str,
        min_length=1,
        description="an image's bytes in base64 (or a data: URL), instead of a file",
        json_schema_extra={"format": IMAGE_FORMAT},
    )
    weight: float = Field(1.0, ge=-WEIGHT_LIMIT, le=WEIGHT_LIMIT)

    @_model_validator(mode="after")
    def _one_source(self) -> "Term":
        if self.kind == "text" and (self.data or not self.value):
            raise ValueError("a text term needs a value, and no data")
        if self.kind == "image" and bool(self.value) == bool(self.data):
            raise ValueError("an image term needs a value (a file) or data, not both")
        return self


class Near(BaseModel):
    """Taken within ``km`` kilometres of a place (EXIF GPS, a video's location): `query --near`."""

    model_config = ConfigDict(strict=True)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    km: float = Field(gt=0, lt=40_100)


class _QueryBase(BaseModel):
    model_config = ConfigDict(strict=True, json_schema_extra={"not": NOT_A_QUERY})

    terms: list[Term] = Field(
        default_factory=list, max_length=MAX_TERMS, description="weighted texts and images, after the fields above"
    )
    model: str | None = Field(default=None, description="refuse (409) unless the daemon answers with this model")

    @_model_validator(mode="after")
    def _something(self) -> "_QueryBase":
        weight = getattr(self, "weight", None)
        text = getattr(self, "text", None) is not None and (weight is None or weight >= MIN_POSITIVE_WEIGHT)
        term = any(t.weight >= MIN_POSITIVE_WEIGHT for t in self.terms)
        if not text and not getattr(self, "image", None) and not term:
            raise ValueError(
                f"a query needs a text, an image, or a term with a weight of at least {MIN_POSITIVE_WEIGHT}"
            )
        return self


class _SimilarBase(BaseModel):
    model_config = ConfigDict(strict=True)

    path: str = Field(min_length=1, description="an indexed file")
    model: str | None = Field(default=None, description="refuse (409) unless the daemon answers with this model")


# Made from the specification, so typed loosely here: FastAPI and clients read the generated classes.
QueryRequest: Any = create_model(
    "QueryRequest",
    __base__=_QueryBase,
    __doc__="`mediasearch query` as JSON: the query specification's fields, and weighted ``terms``.",
    **query_fields(queryspec.QUERY_FIELDS),
)
SimilarRequest: Any = create_model(
    "SimilarRequest",
    __base__=_SimilarBase,
    __doc__="`mediasearch similar` as JSON: a file, and the query specification's filters.",
    **query_fields(queryspec.SIMILAR_FIELDS),
)


def spec_values(body: BaseModel, fields: tuple[QueryField, ...]) -> dict[str, Any]:
    """The query specification's values in a request body (``near`` as ``(lat, lon, km)``)."""
    values = {f.name: getattr(body, f.name) for f in fields}
    if isinstance(values.get("near"), Near):
        near = values["near"]
        values["near"] = (near.lat, near.lon, near.km)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


class IndexRequest(BaseModel):
    """`mediasearch index` as JSON; ``watch`` also adds the paths to the watched roots."""

    model_config = ConfigDict(strict=True)

    paths: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    frame_interval: float = Field(2.0, gt=0)
    max_frames: Annotated[int, WHOLE] = Field(600, ge=1, le=MAX_FRAMES)
    batch_size: Annotated[int, WHOLE] = Field(0, ge=0)
    workers: Annotated[int, WHOLE] = Field(0, ge=0)
    include_hidden: bool = False
    exact_times: bool = False
    retry_failed: bool = False
    tag: bool | None = None
    watch: bool = False
    model: str | None = None


class ForgetRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    path: str = Field(min_length=1)


class TagRequest(BaseModel):
    """A vocabulary (its labels, each with an optional threshold) or a learned-prompts file under the
    library roots, not both; neither: the built-in vocabulary. No other path is read."""

    model_config = ConfigDict(strict=True, extra="forbid", json_schema_extra={"not": NOT_A_TAGGING})

    labels: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1, max_length=MAX_LABELS, description="the tags to assign"
    )
    thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, max_length=MAX_LABELS, description="a label's own threshold (default 0.5)"
    )
    prompts: str | None = Field(
        default=None, min_length=1, description="a learned-prompts file under the library roots"
    )

    @_model_validator(mode="after")
    def _not_both(self) -> "TagRequest":
        if self.labels is not None and self.prompts is not None:
            raise ValueError("give a vocabulary or learned prompts, not both")
        return self


class DuplicatesIn(BaseModel):
    model_config = ConfigDict(strict=True)

    paths: list[str] = Field(default_factory=list, description="folders or files (default: everything)")
    threshold: float | None = Field(default=None, gt=0, le=1, description="pixel similarity, default 0.95")


class Health(BaseModel):
    """``GET /health``: alive, its state (starting, ready, busy, stopping) and the port file's instance."""

    ok: bool
    state: str
    message: str
    instance: str | None = None
    pid: int | None = None


class Error(BaseModel):
    """An error: one line a user can act on, and the kind of error (a `mediasearch.errors` class name)."""

    error: str
    kind: str = Field(description="the error's class, e.g. QueryError, NotIndexedError, ValidationError")
    detail: list[dict[str, Any]] | None = Field(default=None, description="what failed validation (422)")


class TextIn(BaseModel):
    """``POST /text``: a picture or a video on the daemon's machine."""

    model_config = ConfigDict(strict=True, extra="forbid")

    path: str = Field(min_length=1, max_length=4096, description="a picture or a video")


class LineOut(BaseModel):
    text: str
    conf: float
    box: list[float] = Field(description="left, top, right, bottom, in [0, 1] of the picture")
    timestamp: float | None = Field(description="seconds into a video; null for a picture")


class FileTextOut(BaseModel):
    """``text --json`` for one file: its recognised lines, in reading order."""

    path: str
    kind: str
    source: str = Field(description='"index" (the OCR pass stored it) or "read" (read now)')
    lines: list[LineOut]
