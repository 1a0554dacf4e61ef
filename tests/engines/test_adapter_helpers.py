"""The engine-neutral pieces the adapters share: post-import hooks, the start state from a tokenizer's template."""

from __future__ import annotations

import sys

from toy_tokenizer import toy_glm_tokenizer

from glm_plugin.engines.import_hooks import when_imported
from glm_plugin.engines.rendered_prompt import default_start, start_from_template
from glm_plugin.formats import ThinkingStart

R, C, M = ThinkingStart.REASONING, ThinkingStart.CONTENT, ThinkingStart.MODEL


def test_callback_runs_once_after_the_module_executes(tmp_path, monkeypatch):
    (tmp_path / "glm_hook_probe.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    when_imported("glm_hook_probe", lambda module: seen.append(module.VALUE))
    assert seen == []
    import glm_hook_probe  # noqa: F401

    assert seen == [42]
    del sys.modules["glm_hook_probe"]
    import glm_hook_probe  # noqa: F401,F811  (a re-import does not call again)

    assert seen == [42]
    del sys.modules["glm_hook_probe"]


def test_callback_runs_at_once_for_an_imported_module():
    seen = []
    when_imported("json", lambda module: seen.append(module.__name__))
    assert seen == ["json"]


def test_start_from_the_template_and_the_request_flags():
    tok47, tok45 = toy_glm_tokenizer("glm47"), toy_glm_tokenizer("glm45")
    assert start_from_template(tok47, {}) is R
    assert start_from_template(tok47, {"enable_thinking": False}) is C
    assert start_from_template(tok45, None) is M
    assert start_from_template(tok45, {"enable_thinking": False}) is C
    assert start_from_template(None, {}) is None
    assert default_start(None, {}) is R
    assert default_start(None, {"thinking": False}) is C
