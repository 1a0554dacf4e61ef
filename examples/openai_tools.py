"""OpenAI SDK against a GLM server (`make demo`, or `glm-plugin serve --model DIR`): a tool-calling
conversation, non-streaming and streaming, with thinking on and off.

    python examples/openai_tools.py [--base-url http://127.0.0.1:8000/v1] [--model glm-tiny]
"""

import argparse
import json

from openai import OpenAI

TOOLS = [{"type": "function", "function": {
    "name": "set_timer", "description": "Start a named timer",
    "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
                   "required": ["minutes", "label"]}}}]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="glm-tiny")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key="unused")
    messages = [{"role": "user", "content": "Set a timer for 25 minutes called Tea Break."}]

    reply = client.chat.completions.create(model=args.model, messages=messages, tools=TOOLS, temperature=0)
    message = reply.choices[0].message
    print("reasoning:", (message.model_extra or {}).get("reasoning"))
    for call in message.tool_calls or []:
        print("tool call:", call.function.name, json.loads(call.function.arguments))

    print("streaming:", end=" ")
    for chunk in client.chat.completions.create(model=args.model, messages=messages, tools=TOOLS, temperature=0,
                                                stream=True):
        delta = chunk.choices[0].delta if chunk.choices else None
        for call in (delta.tool_calls or []) if delta else []:
            print(call.function.name or "", call.function.arguments or "", end="", flush=True)
    print()

    if message.tool_calls:
        call = message.tool_calls[0]
        messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
                     {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"timer_id": 4821})}]
        answer = client.chat.completions.create(model=args.model, messages=messages, tools=TOOLS, temperature=0)
        print("answer:", answer.choices[0].message.content)

    off = client.chat.completions.create(model=args.model, messages=messages[:1], tools=TOOLS, temperature=0,
                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    print("thinking off, reasoning:", (off.choices[0].message.model_extra or {}).get("reasoning"))


if __name__ == "__main__":
    main()
