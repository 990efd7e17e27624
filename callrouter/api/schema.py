"""Request and response shapes, declared once: they validate requests and write OpenAPI.

A ``Field`` knows its JSON type, bounds and an optional ``check`` that normalises the value
(E.164, SIP URI) or raises ``ValueError`` with the reason. ``Schema.parse`` collects every
field's problem before answering, so one 422 names all that is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from callrouter.api.problems import FieldError, invalid_fields, not_found

Kind = Literal["string", "integer", "number", "boolean", "object", "array"]

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


class FieldInvalid(Exception):
    """Raised inside validation; carries the dotted path of the offending value."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Field:
    """One JSON value's contract."""

    name: str
    kind: Kind
    doc: str
    required: bool = False
    nullable: bool = False
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    items: Field | None = None
    max_items: int | None = None
    values: Field | None = None
    max_properties: int | None = None
    format: str | None = None
    pattern: str | None = None
    check: Callable[[Any], Any] | None = field(default=None, compare=False)

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": [self.kind, "null"] if self.nullable else self.kind}
        schema["description"] = self.doc
        for key, value in (
            ("minLength", self.min_length),
            ("maxLength", self.max_length),
            ("minimum", self.minimum),
            ("maximum", self.maximum),
            ("maxItems", self.max_items),
            ("maxProperties", self.max_properties),
            ("format", self.format),
            ("pattern", self.pattern),
        ):
            if value is not None:
                schema[key] = value
        if self.choices is not None:
            schema["enum"] = [*self.choices, None] if self.nullable else list(self.choices)
        if self.items is not None:
            schema["items"] = self.items.json_schema()
        if self.values is not None:
            schema["additionalProperties"] = self.values.json_schema()
        return schema

    def validate(self, value: Any, path: str) -> Any:
        """The value, normalised; raises FieldInvalid naming ``path``."""
        if value is None:
            if self.nullable:
                return None
            raise FieldInvalid(path, "must not be null")
        if not self._has_kind(value):
            raise FieldInvalid(path, f"must be {_article(self.kind)}")
        if self.kind == "number" and not math.isfinite(value):
            raise FieldInvalid(path, "must be a finite number")
        if self.kind == "string":
            self._validate_string(value, path)
        if self.minimum is not None and value < self.minimum:
            raise FieldInvalid(path, f"must be at least {_num(self.minimum)}")
        if self.maximum is not None and value > self.maximum:
            raise FieldInvalid(path, f"must be at most {_num(self.maximum)}")
        if self.kind == "array":
            value = self._validate_array(value, path)
        if self.kind == "object":
            value = self._validate_object(value, path)
        original = value
        if self.check is not None:
            try:
                value = self.check(value)
            except ValueError as exc:
                raise FieldInvalid(path, str(exc)) from None
        # After the check, whose reasons are friendlier, but never instead of the pattern:
        # what the document promises to refuse must be refused.
        if self.pattern is not None and not re.search(self.pattern, original):
            raise FieldInvalid(path, f"must match the pattern {self.pattern}")
        return value

    def _has_kind(self, value: object) -> bool:
        # bool is an int subclass in Python, but true is not a number in JSON.
        if isinstance(value, bool):
            return self.kind == "boolean"
        return isinstance(value, _PYTHON_TYPES[self.kind])

    def _validate_string(self, value: str, path: str) -> None:
        if "\x00" in value:
            raise FieldInvalid(path, "must not contain NUL characters")
        if self.min_length is not None and len(value) < self.min_length:
            raise FieldInvalid(path, f"must be at least {self.min_length} characters")
        if self.max_length is not None and len(value) > self.max_length:
            raise FieldInvalid(path, f"must be at most {self.max_length} characters")
        if self.choices is not None and value not in self.choices:
            raise FieldInvalid(path, f"must be one of {', '.join(self.choices)}")

    def _validate_array(self, value: list[Any], path: str) -> list[Any]:
        if self.max_items is not None and len(value) > self.max_items:
            raise FieldInvalid(path, f"must have at most {self.max_items} items")
        if self.items is None:
            return value
        return [self.items.validate(item, f"{path}[{i}]") for i, item in enumerate(value)]

    def _validate_object(self, value: dict[str, Any], path: str) -> dict[str, Any]:
        if self.max_properties is not None and len(value) > self.max_properties:
            raise FieldInvalid(path, f"must have at most {self.max_properties} entries")
        if self.values is None:
            return value
        result: dict[str, Any] = {}
        for key, item in value.items():
            if "\x00" in key or not key or len(key) > 64:
                raise FieldInvalid(path, f"key {key[:64]!r} must be 1 to 64 characters")
            result[key] = self.values.validate(item, f"{path}.{key}")
        return result

    def from_text(self, text: str, path: str) -> Any:
        """A query-string value converted to this field's kind, then validated."""
        value: Any = text
        if self.kind in ("integer", "number"):
            try:
                value = int(text) if self.kind == "integer" else float(text)
            except ValueError:
                raise FieldInvalid(path, f"must be {_article(self.kind)}") from None
        elif self.kind == "boolean":
            if text not in ("true", "false"):
                raise FieldInvalid(path, "must be true or false")
            value = text == "true"
        return self.validate(value, path)


def _article(kind: str) -> str:
    return {"integer": "an integer", "object": "an object", "array": "an array"}.get(
        kind, f"a {kind}"
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class Schema:
    """An object made of named fields: a request body, a query string or a response."""

    def __init__(self, *fields: Field) -> None:
        self.fields = fields
        self._by_name = {f.name: f for f in fields}

    def field_named(self, name: str) -> Field:
        return self._by_name[name]

    def json_schema(self, *, partial: bool = False, closed: bool = True) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {f.name: f.json_schema() for f in self.fields},
        }
        required = [f.name for f in self.fields if f.required and not partial]
        if required:
            schema["required"] = required
        if closed:
            schema["additionalProperties"] = False
        return schema

    def parse(self, data: Any, *, partial: bool = False) -> dict[str, Any]:
        """Validate a JSON body: unknown fields, missing required ones and bad values are all
        reported together. ``partial`` (PATCH) makes every field optional."""
        if not isinstance(data, dict):
            raise invalid_fields([FieldError("body", "must be a JSON object")])
        errors = [
            FieldError(str(name)[:64], "unknown field")
            for name in data
            if name not in self._by_name
        ]
        result: dict[str, Any] = {}
        for spec in self.fields:
            if spec.name not in data:
                if spec.required and not partial:
                    errors.append(FieldError(spec.name, "is required"))
                continue
            try:
                result[spec.name] = spec.validate(data[spec.name], spec.name)
            except FieldInvalid as exc:
                errors.append(FieldError(exc.path, exc.reason))
        if errors:
            raise invalid_fields(errors)
        return result

    def parse_query(self, query: Mapping[str, str]) -> dict[str, Any]:
        """Validate query parameters; unknown ones are refused like unknown body fields."""
        errors = [
            FieldError(name[:64], "unknown parameter")
            for name in query
            if name not in self._by_name
        ]
        result: dict[str, Any] = {}
        for spec in self.fields:
            if spec.name in query:
                try:
                    result[spec.name] = spec.from_text(query[spec.name], spec.name)
                except FieldInvalid as exc:
                    errors.append(FieldError(exc.path, exc.reason))
            elif spec.required:
                errors.append(FieldError(spec.name, "is required"))
        if errors:
            raise invalid_fields(errors)
        return result


def parse_uuid(text: str, what: str) -> UUID:
    """A path or query id; a malformed one cannot name anything, so it is a 404."""
    try:
        return UUID(text)
    except ValueError:
        raise not_found(what) from None
