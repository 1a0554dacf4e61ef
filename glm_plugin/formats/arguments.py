"""JSON-Schema-driven typing of `<arg_value>` text: the inverse of the chat template's rendering.

GLM templates render a string argument raw and everything else with `tojson`, so the value text alone does not
say whether `3` was the integer 3 or the string "3". The request's tool schema does. Each declared key gets a
`ValueType`: the set of JSON types it may hold. The streaming parser asks two questions of it: may this value be
streamed as a JSON string before its closing tag (`could_be_non_string`), and what is the final value
(`decode_value`).
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any, Iterable, Mapping

JSON_TYPES = frozenset({"string", "integer", "number", "boolean", "array", "object", "null"})
NON_STRING = JSON_TYPES - {"string"}


class ToolSchemaError(ValueError):
    """A tool definition in the request is malformed; the message names the tool and the fix."""


class ValueType:
    """The JSON types one argument may take. `types is None` means undeclared (no usable schema)."""

    __slots__ = ("types",)

    def __init__(self, types: frozenset[str] | None):
        self.types = types

    @property
    def is_string(self) -> bool:
        """Declared as a string and nothing else: kept verbatim and streamed from its first character."""
        return self.types == frozenset({"string"})

    @property
    def may_be_string(self) -> bool:
        return self.types is None or "string" in self.types

    def __repr__(self) -> str:
        return f"ValueType({sorted(self.types) if self.types is not None else 'undeclared'})"


UNDECLARED = ValueType(None)


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class _SchemaResolver:
    """Reduces one parameter schema to the set of JSON types it admits (unions, allOf, local $ref, enum)."""

    def __init__(self, root: Mapping[str, Any], tool: str):
        self.root = root
        self.tool = tool

    def types(self, schema: Any, depth: int = 0) -> frozenset[str] | None:
        if depth > 32:
            return None  # a $ref cycle: give up typing rather than recurse forever
        if schema is True or schema == {} or schema is None:
            return None
        if not isinstance(schema, Mapping):
            raise ToolSchemaError(
                f"tool {self.tool!r}: a parameter schema must be a JSON object, got {type(schema).__name__}"
            )
        if "$ref" in schema:
            return self.types(self._deref(schema["$ref"]), depth + 1)
        found: frozenset[str] | None = None
        if "type" in schema:
            found = self._declared(schema["type"])
        elif "const" in schema:
            found = frozenset({_json_type_of(schema["const"])})
        elif isinstance(schema.get("enum"), list) and schema["enum"]:
            found = frozenset(_json_type_of(v) for v in schema["enum"])
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                members = [self.types(m, depth + 1) for m in schema[key]]
                union = None if any(m is None for m in members) else frozenset().union(*members)
                found = union if found is None else (found & union if union is not None else found)
        if isinstance(schema.get("allOf"), list):
            for member in schema["allOf"]:
                narrowed = self.types(member, depth + 1)
                if narrowed is not None:
                    found = narrowed if found is None else (found & narrowed or found)
        if found is not None and schema.get("nullable") is True:
            found = found | {"null"}
        if found is not None and "number" in found:
            found = found | {"integer"}  # every JSON integer is a number
        return found

    def _declared(self, declared: Any) -> frozenset[str]:
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ToolSchemaError(f"tool {self.tool!r}: 'type' must be a string or a list of strings, got {declared!r}")
        unknown = [n for n in names if n not in JSON_TYPES]
        if unknown:
            raise ToolSchemaError(
                f"tool {self.tool!r}: unknown JSON Schema type {unknown[0]!r}; use one of {sorted(JSON_TYPES)}"
            )
        return frozenset(names)

    def _deref(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return None  # remote references are not fetched: the key stays undeclared
        node: Any = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node


def tool_name_and_parameters(tool: Any) -> tuple[str, Mapping[str, Any]]:
    """Accepts OpenAI `{"type": "function", "function": {...}}` or a bare `{"name", "parameters"}` mapping."""
    if not isinstance(tool, Mapping):
        raise ToolSchemaError(f"a tool must be a JSON object, got {type(tool).__name__}")
    spec = tool.get("function", tool)
    if not isinstance(spec, Mapping):
        raise ToolSchemaError("a tool's 'function' must be a JSON object")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolSchemaError(f"a tool has no usable 'name' (got {name!r})")
    params = spec.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ToolSchemaError(f"tool {name!r}: 'parameters' must be a JSON Schema object, got {type(params).__name__}")
    return name, params


class _OtherKeys:
    """How a tool types keys outside `properties`: `patternProperties` whose pattern matches the key (each must
    hold, so their types intersect), else `additionalProperties`. Patterns Python's `re` cannot compile (JSON
    Schema patterns are ECMA-262) type nothing: such keys stay undeclared rather than guessed."""

    __slots__ = ("patterns", "additional")

    def __init__(self, params: Mapping[str, Any], resolver: _SchemaResolver, tool: str):
        patterns = params.get("patternProperties") or {}
        if not isinstance(patterns, Mapping):
            raise ToolSchemaError(f"tool {tool!r}: 'patternProperties' must be an object mapping patterns to schemas")
        self.patterns: list[tuple[re.Pattern[str], frozenset[str] | None]] = []
        for pattern, schema in patterns.items():
            try:
                compiled = re.compile(pattern)
            except (re.error, TypeError):
                continue
            self.patterns.append((compiled, resolver.types(schema)))
        additional = params.get("additionalProperties")
        self.additional = resolver.types(additional) if isinstance(additional, Mapping) else None

    def value_type(self, key: str) -> ValueType:
        matched = [types for pattern, types in self.patterns if pattern.search(key)]
        if not matched:
            return ValueType(self.additional) if self.additional is not None else UNDECLARED
        known = [types for types in matched if types is not None]
        if not known:
            return UNDECLARED
        found = known[0]
        for types in known[1:]:
            found = found & types or found  # contradictory patterns: keep the first rather than admit nothing
        return ValueType(found)


class ToolSchemas:
    """Per tool name, per argument key, the `ValueType`; built once per request."""

    def __init__(self, tools: Iterable[Any] | None):
        self._keys: dict[str, dict[str, ValueType]] = {}
        self._other: dict[str, _OtherKeys] = {}
        for tool in tools or ():
            name, params = tool_name_and_parameters(tool)
            resolver = _SchemaResolver(params, name)
            props = params.get("properties") or {}
            if not isinstance(props, Mapping):
                raise ToolSchemaError(f"tool {name!r}: 'properties' must be an object mapping names to schemas")
            self._keys[name] = {key: ValueType(resolver.types(schema)) for key, schema in props.items()}
            other = _OtherKeys(params, resolver, name)
            if other.patterns or other.additional is not None:
                self._other[name] = other

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._keys)

    def declares(self, name: str) -> bool:
        return name in self._keys

    def declares_key(self, name: str, key: str) -> bool:
        """Whether `key` is one of the tool's declared parameters (its schema's `properties`)."""
        return key in self._keys.get(name, ())

    def value_type(self, tool: str, key: str) -> ValueType:
        declared = self._keys.get(tool, {}).get(key)
        if declared is not None:
            return declared
        other = self._other.get(tool)
        return other.value_type(key) if other is not None else UNDECLARED


# A prefix of a JSON number (`-`, `1.`, `2e` ...). Prefix-closed: once a prefix fails, every longer text fails.
_NUMBER_PREFIX = re.compile(r"-?(?:0|[1-9]\d*)?(?:(?<=\d)\.\d*)?(?:(?<=\d)[eE][-+]?\d*)?")
_LITERALS = {"boolean": ("true", "false", "True", "False"), "null": ("null", "None")}
# Scalars longer than this are never held back for typing: a committed-to-string decision must depend on
# the text alone, never on how it was chunked, and holding must stay bounded.
_SCALAR_HOLD_LIMIT = 64


def could_be_non_string(vtype: ValueType, text: str) -> bool:
    """Whether `text` (the value so far) may still turn out to be one of the key's non-string types.

    While True the parser holds the value back; once False it commits to a JSON string and streams. The
    answer is prefix-closed (False stays False as text grows), so streaming and whole-text parsing agree.
    """
    allowed = NON_STRING if vtype.types is None else vtype.types & NON_STRING
    if not allowed:
        return False
    head = text.lstrip()
    if not head:
        return True
    if head[0] in "[{":
        return ("array" in allowed and head[0] == "[") or ("object" in allowed and head[0] == "{")
    if len(head) > _SCALAR_HOLD_LIMIT:
        return False
    token = head.rstrip()  # trailing whitespace may still be followed by the closing tag
    if allowed & {"integer", "number"} and _NUMBER_PREFIX.fullmatch(token):
        return True
    return any(lit.startswith(token) for kind in ("boolean", "null") if kind in allowed for lit in _LITERALS[kind])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _json_value(text: str) -> tuple[bool, Any]:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None
    return _finite(value), value


def _python_literal(text: str) -> tuple[bool, Any]:
    """`True`, `None`, `['a', 'b']`: models trained on Python sometimes write these. Bare numbers are not
    accepted here (`0x10`, `1_000`, `007` are not JSON numbers and must stay strings)."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{(TFN'\"":
        return False, None
    try:
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return False, None
    if isinstance(value, tuple):
        value = list(value)
    try:
        value = json.loads(json.dumps(value))  # tuples, sets and non-str keys fail here
    except (TypeError, ValueError, RecursionError):
        return False, None
    return _finite(value), value


def decode_value(vtype: ValueType, text: str) -> Any:
    """The final value of one argument. Never raises; anything that does not decode stays the raw string."""
    if vtype.is_string:
        return text
    allowed = NON_STRING if vtype.types is None else vtype.types & NON_STRING
    if not allowed or (vtype.may_be_string and not could_be_non_string(vtype, text)):
        return text
    ok, value = _json_value(text)
    if not ok and vtype.types is not None:
        ok, value = _python_literal(text)  # only for declared non-strings: undeclared keys stay conservative
    if ok and isinstance(value, str) and not vtype.may_be_string:
        return _unquoted(vtype, value)
    if not ok or isinstance(value, str):
        return text
    kind = _json_type_of(value)
    if kind in allowed or (kind == "integer" and "number" in allowed):
        return value
    if kind == "number" and "integer" in allowed and value.is_integer():
        return int(value)
    # A value of the wrong type: keep what the model wrote rather than invent a conversion, unless the key
    # admits no string at all, where the decoded JSON is closer to what the client validates against.
    return text if vtype.may_be_string else value


def _unquoted(vtype: ValueType, inner: str) -> Any:
    """A key that admits no string got a quoted one (`"10"` for an integer; SGLang's schema coercion test expects
    42 from `"42"`): the quoted text as a value of the key's type where it is one, else the string without its
    quotes. The quotes are the model's, never part of the value."""
    if inner.strip()[:1] in ("'", '"'):
        return inner  # quoted twice: one level is taken off, never more (each costs a decode of the whole text)
    value = decode_value(vtype, inner)
    return inner if isinstance(value, str) else value
