"""The vLLM `DeltaMessage`s our parsers stream, the per-token ones built without pydantic validation.

Both parsers (`reasoning.py`, `tools.py`) answer each streamed delta with one of these; in a long tool-call argument
that is once per token, where validating three nested pydantic objects costs more than parsing the token
(glm_plugin.engines.unvalidated). `checked` keeps the unvalidated builders only where they build exactly what vLLM's
validating constructors build.
"""

from __future__ import annotations

from vllm.entrypoints.generate.base.protocol import DeltaFunctionCall, DeltaMessage, DeltaToolCall

from glm_plugin.engines.unvalidated import checked, instance

_new_function = instance(DeltaFunctionCall)
_new_call = instance(DeltaToolCall)
_new_message = instance(DeltaMessage)


def _fast_args_message(index: int, text: str) -> DeltaMessage:
    function = _new_function({"name": None, "arguments": text}, {"arguments"})
    call = _new_call({"id": None, "type": None, "index": index, "function": function}, {"index", "function"})
    return _new_message({"role": None, "content": None, "reasoning": None, "tool_calls": [call]}, {"tool_calls"})


def _fast_text_message(reasoning: str | None, content: str | None) -> DeltaMessage:
    fields = {"reasoning", "content"} if reasoning is not None and content is not None else (
        {"reasoning"} if reasoning is not None else {"content"})
    return _new_message({"role": None, "content": content, "reasoning": reasoning, "tool_calls": []}, fields)


def _args_message(index: int, text: str) -> DeltaMessage:
    return DeltaMessage(tool_calls=[DeltaToolCall(index=index, function=DeltaFunctionCall(arguments=text))])


def _text_message(reasoning: str | None, content: str | None) -> DeltaMessage:
    return DeltaMessage(**{k: v for k, v in (("reasoning", reasoning), ("content", content)) if v is not None})


args_message = checked(_fast_args_message, _args_message, 3, '"x')
text_message = checked(_fast_text_message, _text_message, "r", "c")


def delta_message(
    reasoning: list[str], content: list[str], calls: list[DeltaToolCall] | None = None
) -> DeltaMessage | None:
    """One delta from the pieces a parser collected for a step, or None when there is nothing to send."""
    if calls:
        message = DeltaMessage(tool_calls=calls)
        if content:
            message.content = "".join(content)
        return message
    if not reasoning and not content:
        return None
    return text_message("".join(reasoning) if reasoning else None, "".join(content) if content else None)
