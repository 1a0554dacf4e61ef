"""OpenAI SDK streaming, as in DashScope's GLM-4.5 guide: the thinking arrives first (`reasoning_content`, or
`reasoning` on vLLM), then the answer (`content`); with `stream_options={"include_usage": True}` the last chunk
has no choices and carries the token usage.

    python examples/streaming.py [--base-url http://127.0.0.1:8000/v1] [--model NAME] [--prompt TEXT]
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

    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": args.prompt}], max_tokens=256, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    section = None
    for chunk in stream:
        if not chunk.choices:  # the usage chunk: the last one, without choices
            print("\n" + "=" * 20 + " usage " + "=" * 20)
            print(f"prompt_tokens={chunk.usage.prompt_tokens} completion_tokens={chunk.usage.completion_tokens}")
            continue
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        thinking = extra.get("reasoning_content") or extra.get("reasoning")
        if thinking:
            if section != "thinking":
                print("=" * 20 + " thinking " + "=" * 20)
                section = "thinking"
            print(thinking, end="", flush=True)  # end="": deltas are pieces of one text
        if delta.content:
            if section != "answer":
                print("\n" + "=" * 20 + " answer " + "=" * 20)
                section = "answer"
            print(delta.content, end="", flush=True)


if __name__ == "__main__":
    main()
