"""The engine-neutral pieces the adapters share: post-import hooks, the start state from a tokenizer's template."""

from __future__ import annotations

import importlib
import sys

import pytest
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


ALIAS = "import importlib, sys\nsys.modules[__name__] = importlib.import_module({new!r})\n"


@pytest.mark.parametrize("first", ["old", "new"])
def test_a_module_kept_at_two_names_calls_back_once_with_the_real_module(tmp_path, monkeypatch, first):
    """vLLM moves a module and leaves its old name as an alias (the old module puts the new one in its place):
    hooked at both names, the callback runs once, whichever name the engine imports first, with the real module."""
    new, old = f"glm_hook_new_{first}", f"glm_hook_old_{first}"
    (tmp_path / f"{new}.py").write_text("VALUE = 7\n")
    (tmp_path / f"{old}.py").write_text(ALIAS.format(new=new))
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    when_imported((new, old), lambda module: seen.append((module.__name__, module.VALUE)))
    for name in ([old, new] if first == "old" else [new, old]):
        importlib.import_module(name)
    assert seen == [(new, 7)]
    assert sys.modules[old] is sys.modules[new]
    for name in (new, old):
        del sys.modules[name]


def test_a_module_that_replaces_itself_is_handed_over_as_importers_get_it(tmp_path, monkeypatch):
    (tmp_path / "glm_hook_real.py").write_text("VALUE = 8\n")
    (tmp_path / "glm_hook_shim.py").write_text(ALIAS.format(new="glm_hook_real"))
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    when_imported("glm_hook_shim", lambda module: seen.append(module.VALUE))
    import glm_hook_shim  # noqa: F401

    assert seen == [8]
    for name in ("glm_hook_real", "glm_hook_shim"):
        del sys.modules[name]


def test_start_from_the_template_and_the_request_flags():
    tok47, tok45 = toy_glm_tokenizer("glm47"), toy_glm_tokenizer("glm45")
    assert start_from_template(tok47, {}) is R
    assert start_from_template(tok47, {"enable_thinking": False}) is C
    assert start_from_template(tok45, None) is M
    assert start_from_template(tok45, {"enable_thinking": False}) is C
    assert start_from_template(None, {}) is None
    assert default_start(None, {}) is R
    assert default_start(None, {"thinking": False}) is C
