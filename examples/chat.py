"""OpenAI SDK `chat.completions`: one question, the thinking and the answer in separate fields.

The server's reasoning parser moves GLM's `<think>...</think>` out of `content`. vLLM names the field `reasoning`,
SGLang, Z.ai and DashScope `reasoning_content`; the SDK keeps unknown fields in `model_extra`, read both.

    python examples/chat.py [--base-url http://127.0.0.1:8000/v1] [--model NAME] [--prompt TEXT]
"""

import argparse
import os

from openai import OpenAI


def reasoning_of(message) -> str | None:
    extra = message.model_extra or {}
    return extra.get("reasoning_content") or extra.get("reasoning")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", help="default: the server's first model")
    parser.add_argument("--prompt", default="Hello!")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("GLM_API_KEY", "EMPTY"))
    model = args.model or client.models.list().data[0].id  # the name the server was started with

    response = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": args.prompt}],
        max_tokens=256,  # always bound it: a small or confused model otherwise runs to the context limit
        temperature=0,
    )
    message = response.choices[0].message
    print("reasoning:", reasoning_of(message))
    print("answer:", message.content)
    print("finish_reason:", response.choices[0].finish_reason)


if __name__ == "__main__":
    main()
