"""`glm-plugin check URL`: does an OpenAI-compatible GLM endpoint separate thinking, type tool arguments, stream
what it answers whole, report usage and (where offered) speak Anthropic's `/v1/messages`?

Why: the failures people hit with GLM servers are silent (thinking leaked into `content`, arguments that are not
JSON or are strings where the schema says integer, a stream that disagrees with the whole answer, no usage chunk;
docs/troubleshooting.md). This runs one small request per property against any endpoint (ours, Z.ai's,
DashScope's), prints one table row each and exits 1 when one fails (2 when the endpoint cannot be used at all).
Thinking is switched with all three dialects at once (`chat_template_kwargs.enable_thinking`, Z.ai's
`thinking.type`, DashScope's `enable_thinking`), so the same run works against each of them. Requests are greedy
and bounded by `max_tokens`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from glm_plugin.command.chat_client import ChatEndpoint, Reply, reply_from_completion, reply_from_stream
from glm_plugin.command.demo_tools import SCHEMAS
from glm_plugin.command.endpoint import EndpointError
from glm_plugin.formats.tags import THINK_CLOSE, THINK_OPEN

TOOLS = [SCHEMAS["get_weather"], SCHEMAS["set_timer"]]
ONE_CALL = "Set a timer for 25 minutes called Tea Break."
TWO_CALLS = "What is the weather in Paris? Set a timer for 25 minutes called Tea Break."
PLAIN = "Hello!"
TOOL_RESULT = {"timer_id": 4821, "status": "Started"}
THINK_TAGS = (THINK_OPEN, THINK_CLOSE)  # leaked into content, they mean reasoning was not separated
_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list,
               "object": dict, "null": type(None)}


@dataclass
class Outcome:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


class CheckFailed(Exception):
    """One property does not hold; the message says what was seen."""


class _Skip(Exception):
    """The endpoint does not offer this API; not a failure."""


def thinking_params(on: bool) -> dict:
    return {"chat_template_kwargs": {"enable_thinking": on}, "thinking": {"type": "enabled" if on else "disabled"},
            "enable_thinking": on}


def schema_errors(tool: dict, arguments: Any) -> list[str]:
    """Why `arguments` does not fit the tool's JSON Schema (top-level keys: required, declared type, enum)."""
    params = tool["function"]["parameters"]
    if not isinstance(arguments, dict):
        return [f"arguments are a JSON {type(arguments).__name__}, not an object"]
    errors = [f"required {key!r} missing" for key in params.get("required", []) if key not in arguments]
    for key, value in arguments.items():
        spec = params.get("properties", {}).get(key)
        if spec is None:
            errors.append(f"{key!r} is not declared")
            continue
        kinds = spec.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds] if kinds else []
        ok = not kinds or any(isinstance(value, _JSON_TYPES[k]) and not (k in ("integer", "number")
                                                                         and isinstance(value, bool))
                              for k in kinds if k in _JSON_TYPES)
        if not ok:
            errors.append(f"{key}={json.dumps(value)} is not a JSON {'/'.join(kinds)}")
        if "enum" in spec and value not in spec["enum"]:
            errors.append(f"{key}={json.dumps(value)} is not one of {spec['enum']}")
    return errors


def leaked_tags(reply: Reply) -> str | None:
    for tag in THINK_TAGS:
        if tag in (reply.content or ""):
            return f"content contains {tag}: {reply.content[:80]!r}"
    return None


def calls_summary(reply: Reply) -> list[tuple[str, Any]]:
    out = []
    for call in reply.tool_calls:
        try:
            out.append((call.name, call.parsed()))
        except ValueError:
            out.append((call.name, call.arguments))
    return out


def check_calls(reply: Reply, want: int) -> str:
    """Raise CheckFailed unless `reply` holds at least `want` calls of declared tools with valid, typed JSON."""
    tools = {t["function"]["name"]: t for t in TOOLS}
    leak = leaked_tags(reply)
    if leak:
        raise CheckFailed(f"reasoning leaked into content ({leak})")
    if len(reply.tool_calls) < want:
        raise CheckFailed(f"{len(reply.tool_calls)} tool call(s), expected {want}; content: {reply.content!r:.120}")
    for call in reply.tool_calls:
        if call.name not in tools:
            raise CheckFailed(f"call of undeclared tool {call.name!r}")
        try:
            arguments = call.parsed()
        except ValueError:
            raise CheckFailed(f"{call.name} arguments are not valid JSON: {call.arguments[:120]!r}") from None
        errors = schema_errors(tools[call.name], arguments)
        if errors:
            raise CheckFailed(f"{call.name}: " + "; ".join(errors))
    if reply.finish_reason != "tool_calls":
        raise CheckFailed(f"finish_reason {reply.finish_reason!r}, expected 'tool_calls'")
    return ", ".join(f"{c.name}({c.arguments})" for c in reply.tool_calls)


class Conformance:
    """The checks, sharing one endpoint and the whole replies that the streaming checks compare against."""

    def __init__(self, endpoint: ChatEndpoint, max_tokens: int = 256):
        self.endpoint, self.max_tokens = endpoint, max_tokens
        self._whole: dict[str, Reply] = {}

    def params(self, thinking: bool = True, tools: bool = True) -> dict:
        extra = {"tools": TOOLS} if tools else {}
        return {"temperature": 0, "max_tokens": self.max_tokens, **thinking_params(thinking), **extra}

    def whole(self, key: str, prompt: str, **kw: Any) -> Reply:
        if key not in self._whole:
            body = self.endpoint.complete([{"role": "user", "content": prompt}], **self.params(**kw))
            self._whole[key] = reply_from_completion(body)
        return self._whole[key]

    def streamed(self, prompt: str, extra: dict | None = None, **kw: Any) -> Reply:
        params = {**self.params(**kw), **(extra or {})}
        return reply_from_stream(self.endpoint.stream([{"role": "user", "content": prompt}], **params))

    # --- the checks: each returns a detail string or raises CheckFailed ---------------------------------
    def thinking_on(self) -> str:
        reply = self.whole("plain-on", PLAIN, tools=False)
        leak = leaked_tags(reply)
        if leak:
            raise CheckFailed(f"reasoning leaked into content ({leak})")
        if not reply.reasoning:
            raise CheckFailed(f"no reasoning/reasoning_content with thinking on; content: {reply.content!r:.120}")
        if not reply.content:
            raise CheckFailed(f"no content after the thinking (finish_reason {reply.finish_reason})")
        return f"reasoning {len(reply.reasoning)} chars, content {len(reply.content)} chars"

    def thinking_off(self) -> str:
        reply = self.whole("plain-off", PLAIN, thinking=False, tools=False)
        leak = leaked_tags(reply)
        if leak:
            raise CheckFailed(f"reasoning leaked into content ({leak})")
        if reply.reasoning:
            raise CheckFailed(f"reasoning returned with thinking off: {reply.reasoning[:80]!r}")
        if not reply.content:
            raise CheckFailed("no content")
        return f"no reasoning, content {len(reply.content)} chars"

    def tool_call(self) -> str:
        return check_calls(self.whole("one-call", ONE_CALL), 1)

    def parallel_calls(self) -> str:
        return check_calls(self.whole("two-calls", TWO_CALLS), 2)

    def answer_after_result(self) -> str:
        """The round trip: the call turn goes back with its reasoning (GLM-4.7's preserved thinking), then the
        tool's result; the model must answer in content and stop on its own (a `length` stop is a runaway)."""
        call_turn = self.whole("one-call", ONE_CALL)
        check_calls(call_turn, 1)
        call = call_turn.tool_calls[0]
        messages = [{"role": "user", "content": ONE_CALL}, call_turn.history_message(),
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(TOOL_RESULT)}]
        reply = reply_from_completion(self.endpoint.complete(messages, **self.params()))
        leak = leaked_tags(reply)
        if leak:
            raise CheckFailed(f"reasoning leaked into content ({leak})")
        if reply.tool_calls:
            raise CheckFailed(f"called {reply.tool_calls[0].name} again instead of answering")
        if reply.finish_reason != "stop" or not reply.content:
            raise CheckFailed(f"finish_reason {reply.finish_reason!r} after {len(reply.content or '')} chars of "
                              f"content (a runaway answer or none): {(reply.content or '')[-80:]!r}")
        quoted = str(TOOL_RESULT["timer_id"]) in reply.content
        return f"{reply.content[:60]!r}" + ("" if quoted else " (does not quote the result's timer_id)")

    def _agrees(self, key: str, prompt: str, **kw: Any) -> str:
        whole = self.whole(key, prompt, **kw)
        chunks: list[tuple[str, str]] = []
        streamed = reply_from_stream(self.endpoint.stream([{"role": "user", "content": prompt}], **self.params(**kw)),
                                     lambda kind, text: chunks.append((kind, text)))
        for index, count in streamed.name_chunks.items():
            if count != 1:
                raise CheckFailed(f"tool call {index}'s name came in {count} chunks (clients expect it once, whole)")
        for what, a, b in (("reasoning", whole.reasoning, streamed.reasoning),
                           ("content", whole.content, streamed.content),
                           ("tool calls", calls_summary(whole), calls_summary(streamed)),
                           ("finish_reason", whole.finish_reason, streamed.finish_reason)):
            if a != b:
                raise CheckFailed(f"streamed {what} differs: whole {str(a)[:70]!r} vs streamed {str(b)[:70]!r}")
        return f"{len(chunks)} deltas concatenate to the whole answer"

    def streaming_agrees(self) -> str:
        return self._agrees("one-call", ONE_CALL)

    def streaming_agrees_parallel(self) -> str:
        return self._agrees("two-calls", TWO_CALLS)

    def usage_last_chunk(self) -> str:
        reply = self.streamed(PLAIN, {"stream_options": {"include_usage": True}}, tools=False)
        if not reply.usage:
            raise CheckFailed("no usage in any chunk with stream_options.include_usage")
        if not reply.usage_in_last_chunk:
            raise CheckFailed("usage is not in a last chunk of its own (choices: [])")
        if not reply.usage.get("prompt_tokens") or not reply.usage.get("completion_tokens"):
            raise CheckFailed(f"usage without token counts: {reply.usage}")
        return f"prompt {reply.usage['prompt_tokens']}, completion {reply.usage['completion_tokens']} tokens"

    def anthropic_messages(self) -> str:
        tools = [{"name": t["function"]["name"], "description": t["function"]["description"],
                  "input_schema": t["function"]["parameters"]} for t in TOOLS]
        body = {"model": self.endpoint.model, "max_tokens": self.max_tokens, "temperature": 0, "tools": tools,
                "messages": [{"role": "user", "content": ONE_CALL}]}
        reply = self.endpoint.http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
        if reply.status_code in (404, 405):
            raise _Skip(f"not offered (HTTP {reply.status_code})")
        if reply.status_code != 200:
            raise CheckFailed(f"HTTP {reply.status_code}: {reply.text[:160]}")
        blocks = reply.json().get("content") or []
        kinds = [b.get("type") for b in blocks]
        uses = [b for b in blocks if b.get("type") == "tool_use"]
        if not uses:
            raise CheckFailed(f"no tool_use block: {kinds}")
        by_name = {t["function"]["name"]: t for t in TOOLS}
        for use in uses:
            if use.get("name") not in by_name:
                raise CheckFailed(f"tool_use of undeclared tool {use.get('name')!r}")
            errors = schema_errors(by_name[use["name"]], use.get("input"))
            if errors:
                raise CheckFailed(f"{use['name']}: " + "; ".join(errors))
        for block in blocks:
            if block.get("type") == "text" and any(tag in block.get("text", "") for tag in THINK_TAGS):
                raise CheckFailed("a text block contains <think> tags")
        if reply.json().get("stop_reason") != "tool_use":
            raise CheckFailed(f"stop_reason {reply.json().get('stop_reason')!r}, expected 'tool_use'")
        return f"blocks {kinds}"

    def checks(self) -> list[tuple[str, Callable[[], str]]]:
        return [("reasoning separated, thinking on", self.thinking_on),
                ("no reasoning, thinking off", self.thinking_off),
                ("tool call: valid, schema-typed JSON", self.tool_call),
                ("parallel tool calls", self.parallel_calls),
                ("answer after the tool result", self.answer_after_result),
                ("streaming equals non-streaming", self.streaming_agrees),
                ("streaming equals non-streaming, 2 calls", self.streaming_agrees_parallel),
                ("usage in the last streamed chunk", self.usage_last_chunk),
                ("Anthropic /v1/messages", self.anthropic_messages)]

    def run(self) -> list[Outcome]:
        outcomes = []
        for name, check in self.checks():
            try:
                outcomes.append(Outcome(name, "PASS", check()))
            except _Skip as skip:
                outcomes.append(Outcome(name, "SKIP", str(skip)))
            except CheckFailed as failed:
                outcomes.append(Outcome(name, "FAIL", str(failed)))
            except (EndpointError, httpx.HTTPError, ValueError, KeyError) as err:
                outcomes.append(Outcome(name, "FAIL", f"{type(err).__name__}: {str(err)[:200]}"))
        return outcomes


def print_table(outcomes: list[Outcome], title: str, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    colour = {"PASS": "green", "FAIL": "bold red", "SKIP": "yellow"}
    for o in outcomes:
        table.add_row(o.name, f"[{colour[o.status]}]{o.status}[/]", o.detail)
    Console(file=file or sys.stdout, width=140, highlight=False).print(table)


def main(url: str, model: str | None = None, api_key: str | None = None, max_tokens: int = 256,
         file=None) -> int:
    try:
        endpoint = ChatEndpoint(url, model, api_key, timeout=120)
    except EndpointError as err:
        print(f"glm-plugin check: {err}", file=sys.stderr)
        return 2
    try:
        outcomes = Conformance(endpoint, max_tokens).run()
    finally:
        endpoint.close()
    print_table(outcomes, f"glm-plugin check {endpoint.root} ({endpoint.model})", file)
    failed = [o.name for o in outcomes if o.status == "FAIL"]
    out = file or sys.stdout
    print(f"{len(failed)} of {len(outcomes)} checks failed: {', '.join(failed)}" if failed
          else f"all {sum(o.status == 'PASS' for o in outcomes)} checks passed", file=out)
    return 1 if failed else 0
