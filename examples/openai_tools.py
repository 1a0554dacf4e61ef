"""OpenAI SDK tool calling against a GLM server (`make serve`, or `glm-plugin serve --model DIR`): the call with
typed arguments, the same call streamed, the local tool's result sent back and the answer that uses it, then the
same request with thinking off.

GLM-4.7 keeps the thinking of a tool-call turn ("preserved thinking"): send the assistant message back with its
`reasoning_content`, or the model answers the tool result without knowing why it made the call. The OpenAI SDK
drops that field unless you add it, as below.

    python examples/openai_tools.py [--base-url http://127.0.0.1:8000/v1] [--model NAME]
"""

import argparse
import json
import os

from openai import OpenAI

TOOLS = [{"type": "function", "function": {
    "name": "set_timer", "description": "Start a named timer",
    "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
                   "required": ["minutes", "label"]}}}]


def set_timer(minutes: int, label: str) -> dict:
    """The local tool (a pretend one: it starts nothing)."""
    return {"timer_id": 4821, "status": "Started", "minutes": minutes, "label": label}


def reasoning_of(obj) -> str | None:
    extra = obj.model_extra or {}
    return extra.get("reasoning_content") or extra.get("reasoning")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", help="default: the server's first model")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("GLM_API_KEY", "EMPTY"))
    model = args.model or client.models.list().data[0].id  # the name the server was started with
    messages = [{"role": "user", "content": "Set a timer for 25 minutes called Tea Break."}]
    request = dict(model=model, tools=TOOLS, temperature=0, max_tokens=256)

    reply = client.chat.completions.create(messages=messages, **request)
    message = reply.choices[0].message
    print("reasoning:", reasoning_of(message))
    for call in message.tool_calls or []:
        print("tool call:", call.function.name, json.loads(call.function.arguments))

    print("streamed:", end=" ")
    for chunk in client.chat.completions.create(messages=messages, stream=True, **request):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if call.function and call.function.name:
                print(call.function.name, end=" ", flush=True)  # a name arrives once, whole
            if call.function and call.function.arguments:
                print(call.function.arguments, end="", flush=True)  # fragments of one JSON text: no separator
    print()

    if message.tool_calls:
        call = message.tool_calls[0]
        result = set_timer(**json.loads(call.function.arguments))
        messages += [
            {"role": "assistant", "content": message.content or "", "reasoning_content": reasoning_of(message),
             "tool_calls": [call.model_dump(exclude_none=True)]},
            {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)},
        ]
        answer = client.chat.completions.create(messages=messages, **request)
        print("tool result:", json.dumps(result))
        print("answer:", answer.choices[0].message.content)

    off = client.chat.completions.create(messages=messages[:1], extra_body={
        "chat_template_kwargs": {"enable_thinking": False}}, **request)
    off_message = off.choices[0].message
    print("thinking off, reasoning:", reasoning_of(off_message))
    for call in off_message.tool_calls or []:
        print("thinking off, tool call:", call.function.name, json.loads(call.function.arguments))


if __name__ == "__main__":
    main()
