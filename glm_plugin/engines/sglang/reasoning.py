"""SGLang reasoning detector over glm_plugin.formats: `ThinkingSplitter` events in, SGLang parse results out.

Imports nothing from `sglang.srt.function_call` (see `tools.py`). SGLang imports this module when it imports its
reasoning registry; importing it changes nothing in SGLang (what we patch is in `patches.py`).
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Mapping

from sglang.srt.parser.reasoning_parser import Glm45Detector, ReasoningParser
from sglang.srt.parser.reasoning_parser import StreamingParseResult as ReasoningParseResult

from glm_plugin.engines.rendered_prompt import start_from_template
from glm_plugin.formats import ThinkingSplitter, ThinkingStart, reasoning_and_content, start_after_prefill
from glm_plugin.formats.content_edges import ContentEdges
from glm_plugin.formats.late_close import LateCloseFilter, without_late_closes

logger = logging.getLogger(__name__)


@functools.cache
def _engine_reports_tool_stage() -> bool:
    """Whether this SGLang tells reasoning detectors that a tool stage reads their content (0.5.23 does, with
    `tool_call_parser_active=True` only when one does). Where it cannot, a tool stage may follow unannounced."""
    reports = "tool_call_parser_active" in inspect.signature(ReasoningParser.__init__).parameters
    if not reports:
        logger.info("glm_plugin: this SGLang does not tell reasoning parsers whether a tool stage follows; a second "
                    "</think> in answers to requests without tools stays in the content")
    return reports


class GlmReasoningDetector(Glm45Detector):
    """`<think>` splitting for GLM-4.5/4.6/4.7 (`--reasoning-parser glm45` or `glm47`).

    SGLang tells a detector only `force_reasoning` (thinking on for this request) and, when it accepts one, the
    tokenizer. With the tokenizer we render the checkpoint's template's generation prompt to learn whether it
    opens `<think>` itself (GLM-4.7) or lets the model do it (GLM-4.5/4.6); a GLM-4.5 model that answers
    directly then gets content, not reasoning. `ReasoningParser` then hands us the request's own template kwargs
    (`use_request`, see `patches.pass_request_to_detector`), which is what GLM-5.x templates decide by.

    A `</think>` in content after thinking ended is dropped by the tool stage, which knows where argument values
    are (docs/formats.md, "Boundaries"); when SGLang says none follows (no tools, tool_choice "none") we drop it.
    """

    def __init__(
        self,
        stream_reasoning: bool = True,
        force_reasoning: bool | None = None,
        force_nonempty_content: bool = False,
        continue_final_message: bool = False,
        previous_content: str = "",
        reasoning_default: str = "enable_thinking",
        tokenizer: Any = None,
        tool_call_parser_active: bool = False,
    ):
        super().__init__(
            stream_reasoning=stream_reasoning,
            force_reasoning=bool(force_reasoning),
            force_nonempty_content=force_nonempty_content,
            continue_final_message=continue_final_message,
            previous_content=previous_content,
            reasoning_default=reasoning_default,
        )
        self._tokenizer = tokenizer
        self._prefill = previous_content if continue_final_message and isinstance(previous_content, str) else None
        start = start_from_template(
            tokenizer, None if force_reasoning is None else {"enable_thinking": force_reasoning}, logger)
        if start is None:
            start = ThinkingStart.REASONING if force_reasoning else ThinkingStart.MODEL
        self._set_start(start)
        self._edges = ContentEdges()
        no_tool_stage = not tool_call_parser_active and _engine_reports_tool_stage()
        self._late = LateCloseFilter() if no_tool_stage else None
        self._held: list[str] = []  # reasoning not streamed (stream_reasoning=False), or kept for force_nonempty

    def _set_start(self, start: ThinkingStart) -> None:
        if self._prefill is not None:
            start = start_after_prefill(start, self._prefill)
        self.start = start
        self._splitter = ThinkingSplitter(start)

    def use_request(self, request: Any) -> None:
        """Re-read the start from the template rendered with this request's kwargs, as SGLang's chat serving renders
        it: `chat_template_kwargs` plus the top-level `reasoning_effort`. Before any text is parsed."""
        kwargs = request_template_kwargs(request)
        start = start_from_template(self._tokenizer, kwargs, logger) if kwargs is not None else None
        if start is not None:
            self._set_start(start)

    def detect_and_parse(self, text: str) -> ReasoningParseResult:
        splitter = ThinkingSplitter(self.start)
        reasoning, normal = reasoning_and_content(splitter.feed(text) + splitter.finish())
        if self._late is not None:
            normal = without_late_closes(normal)
        normal = normal.strip()
        if self._force_nonempty_content and not normal:
            reasoning, normal = normal, reasoning
        return ReasoningParseResult(normal_text=normal, reasoning_text=reasoning)

    def parse_streaming_increment(self, new_text: str) -> ReasoningParseResult:
        splitter = self._splitter
        if splitter.reasoning_ended and not self._held:
            # Once reasoning has ended the splitter passes text through untouched (its contract), so the answer's
            # tokens, the bulk of a long tool call, skip it.
            return ReasoningParseResult(normal_text=self._edges.feed(self._drop_late(new_text)))
        reasoning, normal = reasoning_and_content(splitter.feed(new_text))
        normal = self._edges.feed(self._drop_late(normal))
        if reasoning and (not self.stream_reasoning or self._force_nonempty_content):
            self._held.append(reasoning)
            if not self.stream_reasoning:
                reasoning = ""
        if self._held and splitter.reasoning_ended:
            if not self.stream_reasoning:
                reasoning = "".join(self._held)
            self._held = []
        return ReasoningParseResult(normal_text=normal, reasoning_text=reasoning)

    def _drop_late(self, normal: str) -> str:
        return self._late.feed(normal) if self._late is not None and normal else normal

    def finish(self) -> ReasoningParseResult:
        reasoning, normal = reasoning_and_content(self._splitter.finish())
        if self._late is not None:
            normal = self._late.feed(normal) + self._late.finish()
        normal = self._edges.feed(normal) + self._edges.finish()
        if self._held:
            held = "".join(self._held) + reasoning
            self._held = []
            if self._force_nonempty_content and not self._splitter.reasoning_ended:
                return ReasoningParseResult(normal_text=held + normal)  # SGLang's rule: the answer was the thinking
            reasoning = held if not self.stream_reasoning else reasoning
        return ReasoningParseResult(normal_text=normal, reasoning_text=reasoning)


def request_template_kwargs(request: Any) -> dict[str, Any] | None:
    """The kwargs SGLang's chat serving renders the template with (`_apply_jinja_template`), or None without a
    chat request."""
    kwargs = getattr(request, "chat_template_kwargs", None)
    if request is None or not (kwargs is None or isinstance(kwargs, Mapping)):
        return None
    effort = getattr(request, "reasoning_effort", None)
    merged = {"reasoning_effort": effort} if effort is not None else {}
    merged.update(kwargs or {})
    return merged
