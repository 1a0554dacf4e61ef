"""A tiny OpenAI/Anthropic-compatible server (standard library http.server) that answers like a correct GLM
endpoint, or with one chosen failure class, so `glm-plugin check` can be tested without an engine."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("invalid_json", "reasoning_leak", "stream_disagrees", "string_for_integer", "no_usage",
          "reasoning_when_off", "no_anthropic", "name_in_pieces", "runaway_answer")

REASONING = "The user asks for a timer. I will call set_timer."
ANSWER = "Hello! How can I help you today?"


def _calls(prompt: str, fault: str | None, streamed: bool) -> list[tuple[str, str]]:
    minutes = '"25"' if fault == "string_for_integer" else "25"
    timer = ("set_timer", '{"minutes": %s, "label": "Tea Break"}' % minutes)
    if fault == "invalid_json":
        timer = ("set_timer", '{"minutes": 25, "label": "Tea Break"')
    if fault == "stream_disagrees" and streamed:
        timer = ("set_timer", '{"minutes": 52, "label": "Tea Break"}')
    return ([("get_weather", '{"city": "Paris"}')] if "weather" in prompt else []) + [timer]


def _thinking(body: dict) -> bool:
    return (body.get("chat_template_kwargs") or {}).get("enable_thinking", True)


def _answer(body: dict, fault: str | None, streamed: bool) -> dict:
    """reasoning, content, calls and finish_reason for a request."""
    last = body["messages"][-1]
    prompt = last["content"]
    thinking = _thinking(body) or fault == "reasoning_when_off"
    reasoning = REASONING if thinking else None
    if last["role"] == "tool":  # the round trip's second request: answer from the result
        result = json.loads(last["content"])
        calls, content, finish = [], f"Timer {result.get('timer_id')} is set.", "stop"
        if fault == "runaway_answer":
            content, finish = "Timer " + "5" * 60, "length"
    elif body.get("tools"):
        calls, content, finish = _calls(prompt, fault, streamed), None, "tool_calls"
    else:
        calls, content, finish = [], ANSWER, "stop"
    if fault == "reasoning_leak" and reasoning:
        content, reasoning = f"<think>{reasoning}</think>{content or ''}", None
    return {"reasoning": reasoning, "content": content, "calls": calls, "finish": finish}


class Handler(BaseHTTPRequestHandler):
    fault: str | None = None
    api_key: str | None = None  # when set, every request needs `Authorization: Bearer <api_key>` (else 401)
    max_model_len: int | None = None  # reported in /v1/models, as vLLM does
    received: list[dict] = []  # request bodies, for tests that check what a client sent

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refused(self) -> bool:
        if self.api_key and self.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._json(401, {"error": "Unauthorized"})
            return True
        return False

    def do_GET(self):
        if self._refused():
            return None
        if self.path == "/v1/models":
            model = {"id": "fake-glm", "object": "model"}
            if self.max_model_len:
                model["max_model_len"] = self.max_model_len
            return self._json(200, {"object": "list", "data": [model]})
        self._json(404, {"error": "not found"})

    def do_POST(self):
        if self._refused():
            return None
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body)
        if self.path == "/v1/messages":
            return self._messages(body)
        if self.path != "/v1/chat/completions":
            return self._json(404, {"error": "not found"})
        if body.get("stream"):
            return self._stream(body)
        a = _answer(body, self.fault, streamed=False)
        message = {"role": "assistant", "content": a["content"], "reasoning": a["reasoning"],
                   "tool_calls": [{"id": f"call_{i}", "type": "function",
                                   "function": {"name": n, "arguments": args}} for i, (n, args) in
                                  enumerate(a["calls"])]}
        self._json(200, {"id": "x", "object": "chat.completion", "model": "fake-glm",
                         "choices": [{"index": 0, "message": message, "finish_reason": a["finish"]}],
                         "usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}})

    def _stream(self, body: dict) -> None:
        a = _answer(body, self.fault, streamed=True)
        deltas: list[dict] = []
        for piece in (a["reasoning"] or "").split(" "):
            if piece:
                deltas.append({"reasoning": piece + " "})
        if deltas:  # the split above adds a trailing space: take it back so the pieces join to the whole
            deltas[-1]["reasoning"] = deltas[-1]["reasoning"][:-1]
        if a["content"]:
            deltas += [{"content": a["content"][:5]}, {"content": a["content"][5:]}]
        for i, (name, args) in enumerate(a["calls"]):
            if self.fault == "name_in_pieces":
                deltas += [{"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                            "function": {"name": name[:3]}}]},
                           {"tool_calls": [{"index": i, "function": {"name": name[3:]}}]}]
            else:
                deltas.append({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                               "function": {"name": name, "arguments": ""}}]})
            deltas += [{"tool_calls": [{"index": i, "function": {"arguments": args[j:j + 7]}}]}
                       for j in range(0, len(args), 7)]
        chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": a["finish"]}]})
        if (body.get("stream_options") or {}).get("include_usage") and self.fault != "no_usage":
            chunks.append({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _messages(self, body: dict) -> None:
        if self.fault == "no_anthropic":
            return self._json(404, {"error": "not found"})
        minutes = "25" if self.fault == "string_for_integer" else 25
        self._json(200, {"id": "msg", "type": "message", "role": "assistant", "stop_reason": "tool_use",
                         "content": [{"type": "thinking", "thinking": REASONING, "signature": ""},
                                     {"type": "tool_use", "id": "toolu_1", "name": "set_timer",
                                      "input": {"minutes": minutes, "label": "Tea Break"}}]})


class FakeGlmServer:
    """`with FakeGlmServer(fault) as url:` serves on a free local port in a thread."""

    def __init__(self, fault: str | None = None, api_key: str | None = None, max_model_len: int | None = None):
        handler = type("FaultHandler", (Handler,), {"fault": fault, "received": [], "api_key": api_key,
                                                    "max_model_len": max_model_len})
        self.received = handler.received
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
