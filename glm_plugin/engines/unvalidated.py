"""Pydantic instances built without validation, for the adapters' per-token hot path.

An engine parser returns several pydantic objects per streamed token (vLLM: `DeltaMessage` > `DeltaToolCall` >
`DeltaFunctionCall`; SGLang: `StreamingParseResult` > `ToolCallItem`), and validating them cost more than
parsing the token itself (about 4 us of the 7 us per token we first measured in vLLM). The adapters fill them
only with values they produced themselves (strings, ints, lists of such objects), so validation has nothing to
catch.

`instance(cls)` returns `make(state, fields_set)`, which lays an instance out as pydantic does: `state` must name
every field. `checked(fast, slow, *sample)` returns `fast` only if it builds the same object as the validating
`slow` for the sample, so on a pydantic version with another layout the adapters fall back to validation: slower,
never wrong.
"""

from __future__ import annotations

from typing import Any, Callable

_new = object.__new__
_set = object.__setattr__


def instance(cls: Any) -> Callable[[dict, set], Any]:
    allow_extra = cls.model_config.get("extra") == "allow"

    def make(state: dict, fields_set: set) -> Any:
        obj = _new(cls)
        _set(obj, "__dict__", state)
        _set(obj, "__pydantic_fields_set__", fields_set)
        _set(obj, "__pydantic_extra__", {} if allow_extra else None)
        _set(obj, "__pydantic_private__", None)
        return obj

    return make


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if hasattr(a, "model_fields_set"):
        return (
            a.model_fields_set == b.model_fields_set
            and a.__pydantic_extra__ == b.__pydantic_extra__
            and a.__pydantic_private__ == b.__pydantic_private__
            and a.__dict__.keys() == b.__dict__.keys()
            and all(_same(a.__dict__[k], b.__dict__[k]) for k in a.__dict__)
            and a.model_dump_json(exclude_unset=True) == b.model_dump_json(exclude_unset=True)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def checked(fast: Callable[..., Any], slow: Callable[..., Any], *sample: Any) -> Callable[..., Any]:
    try:
        return fast if _same(fast(*sample), slow(*sample)) else slow
    except Exception:
        return slow
