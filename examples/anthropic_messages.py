"""Anthropic SDK against a GLM server's `/v1/messages` (vLLM serves it): thinking and tool_use blocks, then a
tool_result round trip.

    python examples/anthropic_messages.py [--base-url http://127.0.0.1:8000] [--model glm-tiny]
"""

import argparse
import json

import anthropic

TOOLS = [{"name": "set_timer", "description": "Start a named timer", "input_schema": {
    "type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
    "required": ["minutes", "label"]}}]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="glm-tiny")
    args = parser.parse_args()
    client = anthropic.Anthropic(base_url=args.base_url, api_key="unused")
    messages = [{"role": "user", "content": "Set a timer for 25 minutes called Tea Break."}]
    reply = client.messages.create(model=args.model, max_tokens=200, messages=messages, tools=TOOLS)
    for block in reply.content:
        print(block.type, getattr(block, "thinking", None) or getattr(block, "input", None) or getattr(block, "text", ""))
    uses = [b for b in reply.content if b.type == "tool_use"]
    if uses:
        messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                                   "content": json.dumps({"timer_id": 4821})}]}]
        answer = client.messages.create(model=args.model, max_tokens=200, messages=messages, tools=TOOLS)
        print("answer:", "".join(b.text for b in answer.content if b.type == "text"))


if __name__ == "__main__":
    main()
