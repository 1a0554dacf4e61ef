"""vLLM `ReasoningParser` adapter: glm_plugin.formats `ThinkingSplitter` events in, vLLM deltas out.

vLLM's `ParserManager` composes a reasoning and a tool parser into its `DelegatingParser`: the reasoning parser sees
the output until it reports that reasoning ended, then the tool parser (`tools.py`) sees the rest. Our
`ThinkingSplitter` and `ToolCallParser` split the work exactly that way, so each adapter owns one of them and only
translates events.

Both adapters declare `engine_based_streaming = True`. That is vLLM's contract for "I keep my own state": the
`DelegatingParser` then hands us each delta alone, instead of re-concatenating the whole output text and token
list on every step (quadratic for long outputs), and asks `has_engine_confirmed_reasoning_end()` and
`finish_streaming()` instead of scanning token ids itself. vLLM imports this module on the first lookup of a GLM
reasoning parser name; importing it changes nothing in vLLM (what we patch is in `patches.py`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from vllm.entrypoints.generate.base.protocol import DeltaMessage
from vllm.reasoning import ReasoningParser

from glm_plugin.engines.rendered_prompt import default_start, start_from_prompt_ids
from glm_plugin.engines.vllm.names import announce_parsers
from glm_plugin.engines.vllm.deltas import delta_message
from glm_plugin.formats import ThinkingSplitter, ThinkingStart, ends_reasoning, reasoning_and_content
from glm_plugin.formats.content_edges import ContentEdges
from glm_plugin.formats.tags import CALL_OPEN, THINK_CLOSE, THINK_OPEN, TURN_BOUNDARIES

logger = logging.getLogger("vllm.glm_plugin")  # under "vllm" so vLLM's log handler shows it


class GlmTokenIds:
    """The GLM special-token ids this tokenizer has (None where it lacks one)."""

    __slots__ = ("think_open", "think_close", "call_open", "boundaries", "ends")

    def __init__(self, tokenizer: Any):
        vocab = tokenizer.get_vocab() if tokenizer is not None else {}
        self.think_open = vocab.get(THINK_OPEN)
        self.think_close = vocab.get(THINK_CLOSE)
        self.call_open = vocab.get(CALL_OPEN)
        self.boundaries = frozenset(vocab[t] for t in TURN_BOUNDARIES if t in vocab)
        # A <tool_call> ends reasoning implicitly, exactly as in ThinkingSplitter.
        self.ends = frozenset(i for i in (self.think_close, self.call_open) if i is not None)


@functools.lru_cache(maxsize=16)
def _token_ids(tokenizer: Any) -> GlmTokenIds:
    return GlmTokenIds(tokenizer)  # once per tokenizer: get_vocab() copies the whole vocabulary


class GlmReasoningParser(ReasoningParser):
    """`<think>` splitting for GLM-4.5/4.6/4.7; where a turn starts is read from the prompt, not the model name."""

    engine_based_streaming = True
    # Streams whose prompt closed thinking still come here (patches.stream_closed_prompts_through_reasoning): the
    # model may write a think block anyway, and it must be split as in the non-streaming path.
    splits_closed_prompts = True

    def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any):
        super().__init__(tokenizer, *args, **kwargs)
        self._ids = _token_ids(tokenizer)
        self._start = default_start(tokenizer, kwargs.get("chat_template_kwargs"), logger)
        self._splitter: ThinkingSplitter | None = None
        self._edges = ContentEdges()
        self._count_scan: list | None = None  # [position, first reasoning id, end marker], see count_reasoning_tokens

    @property
    def reasoning_start_str(self) -> str:
        return THINK_OPEN

    @property
    def reasoning_end_str(self) -> str:
        return THINK_CLOSE

    # -- the prompt decides where the output starts -------------------------------------------------------

    @property
    def start(self) -> ThinkingStart:
        return self._start

    def set_prompt_token_ids(self, prompt_token_ids: Sequence[int]) -> None:
        """Non-streaming hook (forwarded by `DelegatingParser`, see `patches.forward_prompt_token_ids`)."""
        self._start = start_from_prompt_ids(self.model_tokenizer, prompt_token_ids, self._ids.boundaries)

    def adjust_initial_state_from_prompt(self, prompt_token_ids: Sequence[int]) -> None:
        """Streaming hook, called once before the first delta: by vLLM when the prompt left reasoning open, by our
        patch when it closed it."""
        if self._splitter is None:
            self.set_prompt_token_ids(prompt_token_ids)

    def adjust_request(self, request: Any) -> Any:
        request.skip_special_tokens = False  # the GLM markers are special tokens; the parser needs to see them
        return request

    # -- token-id queries (structured output after thinking, usage accounting) -----------------------------

    def is_reasoning_end(self, input_ids: Sequence[int]) -> bool:
        """Pure function of the ids: scan back over the current turn for the marker that decides it."""
        ids = self._ids
        if not ids.ends:
            return False
        for i in range(len(input_ids) - 1, -1, -1):
            token = input_ids[i]
            if token == ids.think_close or (token == ids.call_open and self._opens_call(input_ids, i)):
                return True
            if token == ids.think_open:
                return False
            if token in ids.boundaries:
                # No marker in this turn yet: the model answered directly if it wrote anything (GLM-4.5 style).
                return self._answered_directly(input_ids[i + 1:])
        return False

    def _decode(self, ids: Sequence[int]) -> str:
        return self.model_tokenizer.decode(list(ids), skip_special_tokens=False)

    def _answered_directly(self, turn_ids: Sequence[int]) -> bool:
        head = turn_ids[:64]  # bounded: the first non-blank text decides, as in ThinkingSplitter
        return bool(head) and bool(self._decode(head).strip())

    def _opens_call(self, input_ids: Sequence[int], at: int) -> bool:
        """Whether the `<tool_call>` at `at` starts a call, by the splitter's own rule: prose about the tag inside
        reasoning is not a call (docs/formats.md R4.2). Looks at a bounded window after the tag."""
        return ends_reasoning(self._decode(input_ids[at:at + 64]))

    def is_reasoning_end_streaming(self, input_ids: Sequence[int], delta_ids: Iterable[int]) -> bool:
        if self._ids.think_close in delta_ids:
            return True
        return self.is_reasoning_end(input_ids)

    def _reasoning_end_at(self, input_ids: Sequence[int]) -> tuple[int, int] | None:
        """(index of the first marker ending reasoning, its token) in generated ids, or None."""
        ids = self._ids
        for i, token in enumerate(input_ids):
            if token == ids.think_close or (token == ids.call_open and self._opens_call(input_ids, i)):
                return i, token
        return None

    def extract_content_ids(self, input_ids: list[int]) -> list[int]:
        end = self._reasoning_end_at(input_ids)
        if end is None:
            return input_ids if self._start is ThinkingStart.CONTENT else []
        i, token = end
        return input_ids[i + 1:] if token == self._ids.think_close else input_ids[i:]  # a call's tag is content

    def count_reasoning_tokens(self, token_ids: Sequence[int]) -> int:
        """Reasoning tokens among the generated ids. vLLM calls this on every streamed chunk with continuous usage
        stats, each time with all ids so far, so the scan resumes where the previous call stopped."""
        ids = self._ids
        if not ids.ends:
            return 0
        scan = self._count_scan
        if scan is None or len(token_ids) < scan[0]:
            scan = self._count_scan = [0, 0 if self._start is ThinkingStart.REASONING else None, None]
        pos, first, end = scan
        n = len(token_ids)
        while end is None and pos < n:
            token = token_ids[pos]
            if token == ids.think_close:
                end = pos
            elif token == ids.call_open:
                if self._opens_call(token_ids, pos):
                    end = pos
                elif n - pos < 64:
                    break  # the splitter's rule may still make it a call: look again when more ids arrived
            elif token == ids.think_open and first is None:
                first = pos + 1  # GLM-4.5: reasoning starts after the model's own <think>
            if end is None:
                pos += 1
        scan[:] = [pos, first, end]
        return 0 if first is None else max(0, (pos if end is None else end) - first)

    # -- text ----------------------------------------------------------------------------------------------

    def extract_reasoning(self, model_output: str, request: Any) -> tuple[str | None, str | None]:
        splitter = ThinkingSplitter(self._start)
        reasoning, content = reasoning_and_content(splitter.feed(model_output) + splitter.finish())
        return reasoning or None, content.strip() or None

    def extract_reasoning_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
    ) -> DeltaMessage | None:
        if self._splitter is None:
            self._splitter = ThinkingSplitter(self._start)
        return self._to_delta(self._splitter.feed(delta_text))

    def has_engine_confirmed_reasoning_end(self) -> bool:
        return self._splitter is not None and self._splitter.reasoning_ended

    def finish_streaming(self) -> DeltaMessage | None:
        if self._splitter is None:
            return None
        # Called when reasoning ends (the tool parser takes the rest of the stream) or when the stream ends.
        return self._to_delta(self._splitter.finish(), self._edges.finish(more_follows=self._splitter.reasoning_ended))

    def _to_delta(self, events: list, tail: str = "") -> DeltaMessage | None:
        if not events and not tail:
            return None
        reasoning, content = reasoning_and_content(events)
        content = self._edges.feed(content) + tail
        return delta_message([reasoning] if reasoning else [], [content] if content else [])


announce_parsers()  # at import, not at registration: by now vLLM's log handler is set up
