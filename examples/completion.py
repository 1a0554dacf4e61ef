"""OpenAI SDK `completions` (raw text in, raw text out) against a GLM server, as the SGLang deployment guide's
`test_completion.py` does, but with the prompt in GLM's own chat format.

`/v1/completions` applies no chat template and no reasoning parser: a bare question is continued as if it were
more user text. Write the template's text yourself (GLM-4.7: `[gMASK]<sop><|user|>...<|assistant|><think>`), keep
the special tokens in the output (`skip_special_tokens: false`) and split the thinking off at `</think>`.
Prefer `chat.completions` (examples/chat.py), which does all of this on the server.

    python examples/completion.py [--base-url http://127.0.0.1:8000/v1] [--model NAME]
"""

import argparse
import os

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", help="default: the server's first model")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=os.environ.get("GLM_API_KEY", "EMPTY"))
    model = args.model or client.models.list().data[0].id  # the name the server was started with

    prompt = "[gMASK]<sop><|user|>Hello!<|assistant|><think>"  # thinking on: the prompt opens the block
    response = client.completions.create(model=model, prompt=prompt, max_tokens=128, temperature=0,
                                         extra_body={"skip_special_tokens": False})
    text = response.choices[0].text
    reasoning, _, answer = text.partition("</think>")
    print("reasoning:", reasoning.strip())
    print("answer:", answer.replace("<|user|>", "").strip())
    print("finish_reason:", response.choices[0].finish_reason)
    print("usage:", response.usage.prompt_tokens, "prompt +", response.usage.completion_tokens, "completion tokens")


if __name__ == "__main__":
    main()
