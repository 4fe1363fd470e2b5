"""The board's answers and request bodies as pydantic models: the core routes' (``/api/runs``, ``/api/views``,
``/api/file``, the views' registry, errors) and the types every view's ``models.py`` shares.

They describe what the routes send today; the server publishes them as its OpenAPI schema (``/openapi.json``,
under the same token and ``Host`` rules as every route). A route names its answer's model in its decorator
(``response_model=``) and still returns the bytes it encoded itself (:class:`~deepscope.dashboard.http.JSONAnswer`,
or pre-encoded JSON on hot paths): FastAPI sends a returned ``Response`` as it is, so a model documents an answer
and never validates or re-encodes it on the way out (no cost per request). ``tests/test_board_openapi.py`` checks
the real answers of a board against these models, so an answer that drifts from its model fails there.

Answers are strict (``extra="forbid"``: a key the model does not name is a drift too). Non-finite floats travel as
the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (:data:`Number`); arrays sent as bytes are :class:`Packed`.
Needs the ``board`` extra (pydantic comes with FastAPI); a view's ``data.py`` never imports its models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import BadInputError

__all__ = [
    "API_VERSION",
    "BINARY",
    "ERRORS",
    "FILE",
    "Answer",
    "Error",
    "Number",
    "Overview",
    "Packed",
    "Packed32",
    "RegistryEntry",
    "Request",
    "Run",
    "Unreadable",
    "binary",
    "checked",
    "readable",
    "request_body",
]

# A float as JSON carries it: a number, or the name of a non-finite one (JSON has no NaN).
NonFinite = Literal["NaN", "Infinity", "-Infinity"]
Number = Annotated[float | NonFinite, Field(description='a number, or "NaN", "Infinity", "-Infinity"')]


class Answer(BaseModel):
    """An answer's object: exactly the keys named (``additionalProperties: false`` in the schema)."""

    model_config = ConfigDict(extra="forbid")


class Request(BaseModel):
    """A request body's object: exactly the keys named, each of the type named (no conversion: ``"1"`` is no
    integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Error(Answer):
    """Any refused or failed request (4xx, 5xx): what went wrong and how to fix it, files named relative to the
    served directory."""

    detail: str


class Packed(Answer):
    """An int64 or float64 array: its little-endian bytes in base64 (``encoding=base64``; read with a
    ``DataView``)."""

    dtype: Literal["<f8", "<i8"]
    base64: str


class Packed32(Answer):
    """An int32 or float32 array (positions, indices): its little-endian bytes in base64."""

    dtype: Literal["<f4", "<i4"]
    base64: str


class Unreadable(Answer):
    """A record that cannot be read (a damaged row or file), passed over while the others are served."""

    tag: str
    step: int
    error: str


class Run(Answer):
    """A run of ``/api/runs``; an unreadable one is listed with status ``"unreadable"`` and why in ``error``."""

    name: str
    status: Literal["running", "finished", "failed", "interrupted", "unreadable"]
    created_at: float | None = Field(description="seconds since the epoch; null if unreadable")
    tags: dict[str, str] = Field(description="tag -> its record kind")
    error: str | None


class Overview(Answer):
    """``/api/overview``: what the page polls, from one listing of the runs: ``/api/runs`` and ``/api/views``."""

    runs: list[Run]
    views: dict[str, bool] = Field(description="view -> whether it has data to show")


class RegistryEntry(Answer):
    """A view of ``static/views.json`` (what the page loads first): its tab, its record kinds, its module, the
    conventions it shares with Python."""

    name: str
    title: str
    kinds: list[str]
    module: str
    conventions: dict[str, Any]
    traces: list[str] = Field(description="the plotly trace types the view draws")


# A route whose answer is not JSON: its content types, each a string of bytes (OpenAPI's binary format).
BINARY = {"type": "string", "format": "binary"}


def binary(*media: str, description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route answering bytes of one of the ``media`` types (a file, a picture, a stream)."""
    return {200: {"description": description, "content": {m: {"schema": BINARY} for m in media}}}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra=`` declaring ``model`` as the JSON body of a route that reads its body itself (to check its
    type and size first)."""
    schema = model.model_json_schema()
    if "$defs" in schema:  # its references would point into the OpenAPI document, not into the schema
        raise TypeError(f"{model.__name__}: a body a route reads itself is one flat model")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


M = TypeVar("M", bound=BaseModel)


def readable(error: ValidationError | list[dict[str, Any]]) -> str:
    """A validation failure as one line a person reads: ``where: what (got value)`` per error, ``; ``-joined."""
    errors = error.errors() if isinstance(error, ValidationError) else error
    said = []
    for each in errors:
        where = ".".join(str(part) for part in each.get("loc", ()) if part not in ("body",)) or "body"
        value = each.get("input")
        got = "" if value is None or isinstance(value, dict | list) else f" (got {_short(repr(value))})"
        said.append(f"{where}: {each.get('msg', 'invalid')}{got}")
    return "; ".join(said)


def _short(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def checked(model: type[M], value: Any) -> M:
    """``value`` (a decoded JSON body) as ``model``, else a :class:`BadInputError` (422) saying which field is
    wrong and why."""
    try:
        return model.model_validate(value)
    except ValidationError as e:
        raise BadInputError(f"the body is not what the route takes: {readable(e)}") from None


API_VERSION = "1"  # the answers' shapes: raised when one changes in a way a client would notice
DESCRIPTION = (
    "The deepscope board's JSON API: what its page asks. Every request carries the board's token when it has one "
    "(`?token=` or `Authorization: Bearer`); without one, only a loopback `Host` is answered. Reads are GET; "
    "anything that starts work is a POST with a JSON body."
)

# The errors every route may answer, each as {"detail"}.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error, "description": said}
    for code, said in (
        (401, "the board's token is missing or wrong"),
        (404, "no such run, tag, step or file (or a run that cannot be read, and why)"),
        (422, "a parameter or body of the wrong type or out of range, and how to fix it"),
    )
}

FILE = binary("*/*", description="a record's file (a picture, a sound, a clip, ...)")  # /api/file
