"""Thinking on and off. GLM thinks by default; turn it off per request with
`chat_template_kwargs={"enable_thinking": False}` (vLLM and SGLang pass it to GLM's chat template).

The hosted APIs spell the switch differently: Z.ai `thinking={"type": "disabled"}`, DashScope
`enable_thinking=False` (top level). On a vLLM or SGLang server use `chat_template_kwargs`; with glm_plugin
installed those servers accept the hosted spellings too.

    python examples/thinking_modes.py [--base-url http://127.0.0.1:8000/v1] [--model NAME]
"""

import argparse
import os

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", help="default: the server's first model")
    parser.add_argument("--prompt", default="Hello!")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("GLM_API_KEY", "EMPTY"))
    model = args.model or client.models.list().data[0].id  # the name the server was started with

    for enabled in (True, False):
        response = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": args.prompt}], max_tokens=256, temperature=0,
            extra_body={"chat_template_kwargs": {"enable_thinking": enabled}},
        )
        message = response.choices[0].message
        extra = message.model_extra or {}
        print(f"thinking {'on' if enabled else 'off'}:")
        print("  reasoning:", extra.get("reasoning_content") or extra.get("reasoning"))
        print("  answer:", message.content)


if __name__ == "__main__":
    main()
