"""The hosted GLM APIs' thinking switches, mapped onto the chat-template kwarg GLM's template reads.

Clients written for Z.ai send `"thinking": {"type": "enabled" | "disabled"}`; clients written for DashScope send a
top-level `"enable_thinking": true | false`. vLLM and SGLang read only `chat_template_kwargs.enable_thinking`, so
those requests got thinking on whatever they asked (silently). The adapters call `merged_template_kwargs` before the
template renders. An explicit `chat_template_kwargs.enable_thinking` wins. Standard library only.
"""

from __future__ import annotations

from typing import Any, Mapping

ZAI_TYPES = {"enabled": True, "disabled": False}


class ThinkingDialectError(ValueError):
    """A hosted-API thinking switch the server cannot read; the message names the field and the accepted values."""


def thinking_switch(fields: Mapping[str, Any]) -> bool | None:
    """The thinking on/off a request asks for in Z.ai's or DashScope's dialect, or None if it asks in neither."""
    asked: dict[str, bool] = {}
    zai = fields.get("thinking")
    if zai is not None:
        kind = zai.get("type") if isinstance(zai, Mapping) else None
        if kind not in ZAI_TYPES:
            raise ThinkingDialectError(
                f'"thinking": {zai!r} is not a Z.ai thinking switch; send {{"type": "enabled"}} or '
                '{"type": "disabled"}, or chat_template_kwargs.enable_thinking')
        asked["thinking.type"] = ZAI_TYPES[kind]
    dashscope = fields.get("enable_thinking")
    if dashscope is not None:
        if not isinstance(dashscope, bool):
            raise ThinkingDialectError(f'"enable_thinking": {dashscope!r} must be true or false (DashScope dialect)')
        asked["enable_thinking"] = dashscope
    if len(set(asked.values())) > 1:
        raise ThinkingDialectError(f"the request asks for thinking both on and off ({asked}); send one switch")
    return next(iter(asked.values()), None)


def merged_template_kwargs(template_kwargs: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """`template_kwargs` with `enable_thinking` set from a hosted-API switch, unless it is set there already.
    Returns the input object unchanged when the request uses no dialect."""
    switch = thinking_switch(fields)
    if switch is None or (template_kwargs and "enable_thinking" in template_kwargs):
        return template_kwargs  # type: ignore[return-value]
    return {**(template_kwargs or {}), "enable_thinking": switch}
