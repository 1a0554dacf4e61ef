"""One OpenAI-compatible chat request, streamed or whole, read into a `Reply` (reasoning, content, tool calls, usage).

Why not the OpenAI SDK: `glm-plugin check` must see exactly what a server sent (a `reasoning` or a
`reasoning_content` field, argument strings that are not JSON, a usage chunk with no choices), and the SDK hides
some of that behind its models. This client keeps the raw JSON and is shared by `chat` and `check`; the server's
model list comes from glm_plugin.command.endpoint.
GLM servers name the thinking field differently: vLLM sends `reasoning`, SGLang, Z.ai and DashScope
`reasoning_content`; both are read, and the history sends `reasoning_content` back (vLLM accepts it too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import httpx

from glm_plugin.command.endpoint import EndpointError, api_root, list_models, pick_model

REASONING_FIELDS = ("reasoning_content", "reasoning")


def reasoning_of(obj: dict) -> str | None:
    for key in REASONING_FIELDS:
        if obj.get(key):
            return obj[key]
    return None


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text exactly as the server sent it (streamed: the concatenated fragments)

    def parsed(self) -> Any:
        """The arguments as JSON; raises ValueError when the server's text is not JSON."""
        return json.loads(self.arguments or "{}")


@dataclass
class Reply:
    reasoning: str | None = None
    content: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict | None = None
    usage_in_last_chunk: bool | None = None  # streamed replies only
    name_chunks: dict[int, int] = field(default_factory=dict)  # per call index: chunks that carried a name

    def history_message(self) -> dict:
        """The assistant turn to send back: GLM-4.7 expects the call turn's thinking with it."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or ""}
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in self.tool_calls]
        return message


class ChatEndpoint:
    """`POST /v1/chat/completions` on one server, with an optional bearer key."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, timeout: float = 300.0):
        self.root = api_root(url)
        self.model = pick_model(list_models(self.root, api_key), model, self.root)["id"]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.root, headers=headers, timeout=timeout)

    def _body(self, messages: list[dict], **params: Any) -> dict:
        return {"model": self.model, "messages": messages, **{k: v for k, v in params.items() if v is not None}}

    def complete(self, messages: list[dict], **params: Any) -> dict:
        """The raw JSON of a non-streamed completion."""
        reply = self.http.post("/v1/chat/completions", json=self._body(messages, **params))
        if reply.status_code != 200:
            raise EndpointError(f"HTTP {reply.status_code} from {self.root}/v1/chat/completions: {reply.text[:500]}")
        return reply.json()

    def stream(self, messages: list[dict], **params: Any) -> Iterator[dict]:
        """The raw JSON chunks of a streamed completion (server-sent events up to `[DONE]`)."""
        body = self._body(messages, stream=True, **params)
        with self.http.stream("POST", "/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                reply.read()
                raise EndpointError(f"HTTP {reply.status_code} from {self.root}/v1/chat/completions: "
                                    f"{reply.text[:500]}")
            for line in reply.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    yield json.loads(data)
                except ValueError:
                    raise EndpointError(f"a streamed chunk is not JSON: {data[:200]}") from None

    def close(self) -> None:
        self.http.close()


def reply_from_completion(body: dict) -> Reply:
    """A non-streamed completion's first choice as a Reply."""
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"the completion has no choices: {json.dumps(body)[:300]}") from None
    message = choice.get("message") or {}
    calls = [ToolCall(c.get("id") or "", (c.get("function") or {}).get("name") or "",
                      (c.get("function") or {}).get("arguments") or "")
             for c in message.get("tool_calls") or []]
    return Reply(reasoning_of(message), message.get("content") or None, calls, choice.get("finish_reason"),
                 body.get("usage"))


# on_event(kind, text): kind is "reasoning", "content", "tool_name" (index in text after a tab) or "tool_args".
EventSink = Callable[[str, str], None]


def reply_from_stream(chunks: Iterator[dict], on_event: EventSink | None = None) -> Reply:
    """Concatenate streamed deltas into a Reply, calling `on_event` for each piece as it arrives."""
    reasoning, content, calls, reply = [], [], {}, Reply()
    emit = on_event or (lambda kind, text: None)
    last_had_usage = False
    for chunk in chunks:
        last_had_usage = bool(chunk.get("usage")) and not chunk.get("choices")
        if chunk.get("usage"):
            reply.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = reasoning_of(delta)
            if piece:
                reasoning.append(piece)
                emit("reasoning", piece)
            if delta.get("content"):
                content.append(delta["content"])
                emit("content", delta["content"])
            for call in delta.get("tool_calls") or []:
                index = call.get("index", len(calls))
                entry = calls.setdefault(index, ToolCall("", "", ""))
                function = call.get("function") or {}
                if call.get("id"):
                    entry.id = call["id"]
                if function.get("name"):
                    reply.name_chunks[index] = reply.name_chunks.get(index, 0) + 1
                    entry.name += function["name"]
                    emit("tool_name", f"{index}\t{function['name']}")
                if function.get("arguments"):
                    entry.arguments += function["arguments"]
                    emit("tool_args", function["arguments"])
            if choice.get("finish_reason"):
                reply.finish_reason = choice["finish_reason"]
    reply.reasoning = "".join(reasoning) or None
    reply.content = "".join(content) or None
    reply.tool_calls = [calls[i] for i in sorted(calls)]
    reply.usage_in_last_chunk = last_had_usage
    return reply
