"""Every change glm_plugin makes to SGLang's own classes, each with the SGLang quirk it answers.

`register()` (`__init__.py`) installs each one through `register_parts`, under the part it belongs to, once SGLang
imports the module it changes; importing our parser or model modules patches nothing. Standard library only at
module level: this module is imported at plugin-load time in every SGLang process. Each patch is idempotent and
leaves other parsers' requests as SGLang handles them.

- part `parsers`: `pass_request_to_detector` (`ReasoningParser.__init__`), `accept_hosted_thinking_switches`
  (`OpenAIServingChat.handle_request`).

Not here, because it is bound per instance rather than installed: `model.py`'s `route_experts_through_op` gives
the MoE layers of our own model classes the glm_plugin expert op (part `kernels`).
"""

from __future__ import annotations

import functools
import inspect
import logging
from types import ModuleType
from typing import Any

from glm_plugin.engines.sglang.names import REASONING_PARSERS, TOOL_PARSERS
from glm_plugin.engines.wrap_once import already_wrapped, install

logger = logging.getLogger(__name__)


def pass_request_to_detector(module: ModuleType) -> None:
    """Hand our reasoning detector the request `ReasoningParser` was built for.

    Quirk: SGLang passes a detector `force_reasoning` (derived from `enable_thinking` alone) and the tokenizer,
    never the request, so a template whose generation prompt depends on `reasoning_effort` or on no switch at all
    (GLM-5.3 always thinks) would be misread. Wraps `ReasoningParser.__init__` once; other detectors are untouched.
    Where SGLang's signature no longer has `request`, logs that once and leaves SGLang's behaviour.

    Remove when: SGLang hands reasoning detectors the request (or its template kwargs).
    """
    from glm_plugin.engines.sglang.reasoning import GlmReasoningDetector

    parser_class = module.ReasoningParser
    original = parser_class.__init__
    if already_wrapped(original):
        return
    signature = inspect.signature(original)
    if "request" not in signature.parameters:
        logger.info("glm_plugin: SGLang's ReasoningParser takes no request; GLM templates are read with "
                    "enable_thinking only")
        return

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if isinstance(self.detector, GlmReasoningDetector):
            request = signature.bind(self, *args, **kwargs).arguments.get("request")
            if request is not None:
                self.detector.use_request(request)

    install(parser_class, "__init__", __init__)


def accept_hosted_thinking_switches(module: ModuleType) -> None:
    """Z.ai's `thinking: {"type": "enabled" | "disabled"}` and DashScope's top-level `enable_thinking: bool` become
    `chat_template_kwargs.enable_thinking` for servers running our GLM parsers.

    Quirk: SGLang declares `thinking` but only reads it for MiniMax templates, and its request model drops
    `enable_thinking` on arrival, so that one is read from the request's JSON body, which the web framework has
    already parsed and cached. A switch that cannot be read is a 400 naming the field, before SGLang's own handling
    starts.

    Remove when: SGLang maps `thinking` / `enable_thinking` to `chat_template_kwargs` for every template.
    """
    from glm_plugin.engines.thinking_dialects import ThinkingDialectError, merged_template_kwargs

    serving = module.OpenAIServingChat
    original = serving.handle_request
    if already_wrapped(original):
        return

    async def handle_request(self, request, raw_request):
        if self.reasoning_parser in REASONING_PARSERS or self.tool_call_parser in TOOL_PARSERS:
            fields = {"thinking": getattr(request, "thinking", None)}
            try:
                body = await raw_request.json() if raw_request is not None else None
            except Exception:  # noqa: BLE001 - no readable JSON body: only the declared fields count
                body = None
            if isinstance(body, dict) and "enable_thinking" in body:
                fields["enable_thinking"] = body["enable_thinking"]
            try:
                request.chat_template_kwargs = merged_template_kwargs(request.chat_template_kwargs, fields)
            except ThinkingDialectError as error:
                return self.create_error_response(str(error))
        return await original(self, request, raw_request)

    install(serving, "handle_request", handle_request)
