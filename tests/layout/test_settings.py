"""glm_plugin/settings.py is the one list of environment variables: the package reads none elsewhere (Python, read
with `ast`; C++, read with a pattern), and docs/install.md's table names exactly that list."""

from __future__ import annotations

import ast
import pathlib
import re

from glm_plugin import settings

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and \
        isinstance(node.value, ast.Name) and node.value.id == "os"


def environ_reads(source: str) -> list[int]:
    """Lines that read one variable from the process environment: os.environ.get / [...] / os.getenv, and a
    mapping chosen between os.environ and another (`(os.environ if e is None else e).get`)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get":
                target = node.func.value
            elif node.func.attr == "getenv" and isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
                lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            target = node.value
        if target is not None and (_is_os_environ(target) or (
                isinstance(target, ast.IfExp) and (_is_os_environ(target.body) or _is_os_environ(target.orelse)))):
            lines.append(node.lineno)
    return lines


def test_the_checker_sees_each_way_of_reading_a_variable():
    code = ("import os\na = os.environ.get('X')\nb = os.environ['Y']\nc = os.getenv('Z')\n"
            "d = (os.environ if e is None else e).get('W')\nf = dict(os.environ)\nos.environ['V'] = '1'\n")
    assert environ_reads(code) == [2, 3, 4, 5]


def test_no_module_but_settings_reads_the_environment():
    found = {str(path.relative_to(ROOT)): environ_reads(path.read_text(encoding="utf-8"))
             for path in (ROOT / "glm_plugin").rglob("*.py") if path.name != "settings.py"}
    assert not {path: lines for path, lines in found.items() if lines}


def test_the_cpp_kernels_read_only_listed_variables():
    sources = [p for p in (ROOT / "csrc").rglob("*") if p.suffix in (".cpp", ".cu", ".h", ".cuh")]
    named = {name for p in sources
             for name in re.findall(r'(?:getenv|env_is)\(\s*"([A-Z_0-9]+)"', p.read_text(encoding="utf-8"))}
    assert named, "the pattern no longer finds the C++ kernels' getenv calls"
    listed = {s.name for s in settings.SETTINGS.values() if s.reader == "C++"}
    assert named == listed


def test_the_docs_list_exactly_the_settings():
    text = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    section = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([A-Z_0-9]+)` \|", section, re.MULTILINE)
    assert sorted(documented) == sorted(settings.SETTINGS) and len(documented) == len(set(documented))


def test_unset_and_empty_give_the_default_and_presence_is_told_apart():
    assert settings.value("GLM_PLUGIN_KERNEL", {}) == "auto"
    assert settings.value("GLM_PLUGIN_KERNEL", {"GLM_PLUGIN_KERNEL": ""}) == "auto"
    assert settings.value("GLM_PLUGIN_KERNEL", {"GLM_PLUGIN_KERNEL": "cpp"}) == "cpp"
    assert settings.is_set("CUDA_VISIBLE_DEVICES", {"CUDA_VISIBLE_DEVICES": ""})
    assert not settings.is_set("CUDA_VISIBLE_DEVICES", {})
