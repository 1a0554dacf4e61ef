"""Anthropic SDK against a GLM server's `/v1/messages` (vLLM serves it): thinking and tool_use blocks, then the
tool_result round trip. The assistant turn goes back whole, thinking block included, which is what GLM-4.7's
preserved thinking needs (the Anthropic SDK does this naturally: you return `reply.content` as it came).

    python examples/anthropic_messages.py [--base-url http://127.0.0.1:8000] [--model NAME]
"""

import argparse
import json
import os

import anthropic
import httpx

TOOLS = [{"name": "set_timer", "description": "Start a named timer", "input_schema": {
    "type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
    "required": ["minutes", "label"]}}]


def set_timer(minutes: int, label: str) -> dict:
    """The local tool (a pretend one: it starts nothing)."""
    return {"timer_id": 4821, "status": "Started"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", help="default: the server's first model")
    args = parser.parse_args()
    key = os.environ.get("GLM_API_KEY", "EMPTY")  # any value unless the server has --api-key
    client = anthropic.Anthropic(base_url=args.base_url, api_key=key)
    # the served name from the OpenAI-style model list (the Anthropic SDK expects its own list format)
    model = args.model or httpx.get(args.base_url.rstrip("/") + "/v1/models",
                                    headers={"Authorization": f"Bearer {key}"}).json()["data"][0]["id"]
    messages = [{"role": "user", "content": "Set a timer for 25 minutes called Tea Break."}]
    # temperature goes in extra_body: this SDK version has no `temperature` argument
    request = dict(model=model, max_tokens=256, tools=TOOLS, extra_body={"temperature": 0})

    reply = client.messages.create(messages=messages, **request)
    for block in reply.content:
        if block.type == "thinking":
            print("thinking:", block.thinking)
        elif block.type == "tool_use":
            print("tool_use:", block.name, json.dumps(block.input))
        elif block.type == "text":
            print("text:", block.text)
    print("stop_reason:", reply.stop_reason)

    uses = [b for b in reply.content if b.type == "tool_use"]
    if uses:
        result = set_timer(**uses[0].input)
        messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                   "content": json.dumps(result)}]}]
        answer = client.messages.create(messages=messages, **request)
        print("tool result:", json.dumps(result))
        print("answer:", "".join(b.text for b in answer.content if b.type == "text"))


if __name__ == "__main__":
    main()
