"""The bundled tiny-glm chat template must render exactly like GLM-4.7's.

Why: the parsers decide where thinking starts from the rendered prompt, and the tiny model was trained on
this template's output; any drift from GLM-4.7 would make end-to-end tests prove nothing about the real
models. The golden strings in ``chat_template_goldens.json`` were rendered once from the GLM-4.7 template
(with transformers' Jinja settings) and are stored here, so the test never reads anything outside the repo.
"""

import json
import pathlib

import pytest

jinja2 = pytest.importorskip("jinja2")
import jinja2.ext  # noqa: E402
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

import glm_plugin  # noqa: E402

ASSET = pathlib.Path(glm_plugin.__file__).parent / "assets" / "tiny-glm"
GOLDENS = json.loads((pathlib.Path(__file__).parent / "chat_template_goldens.json").read_text(encoding="utf-8"))


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@pytest.fixture(scope="module")
def template():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    return env.from_string((ASSET / "chat_template.jinja").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_matches_glm47_golden(template, name):
    case = GOLDENS[name]
    assert template.render(**case["kwargs"]) == case["expected"]


def test_tokenizer_config_carries_the_same_template():
    cfg_path = ASSET / "tokenizer_config.json"
    if not cfg_path.exists():
        pytest.skip("tokenizer_config.json not generated yet")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    assert cfg["chat_template"] == (ASSET / "chat_template.jinja").read_text(encoding="utf-8")


def test_generation_prompt_opens_or_closes_thinking(template):
    msgs = [{"role": "user", "content": "hi"}]
    assert template.render(messages=msgs, add_generation_prompt=True).endswith("<|assistant|><think>")
    assert template.render(messages=msgs, add_generation_prompt=True,
                           enable_thinking=False).endswith("<|assistant|></think>")
