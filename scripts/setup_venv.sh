#!/usr/bin/env bash
# Create/refresh the project's virtual environment.
# - If the interpreter that creates the venv already has torch (a CUDA build on a GPU box, say),
#   the venv is made with --system-site-packages so that torch is reused, never replaced.
# - Otherwise torch==2.13.0 is installed first; on the build machines pip resolves it to the
#   local CPU wheel, so the multi-GB CUDA download is never pulled on a CPU-only machine.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,llm}

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] reusing the installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0 (CPU wheel where one is provided locally)"
  "$PY" -m pip install -q "torch==2.13.0"
fi
echo "[setup] installing the project with extras [$EXTRAS]"
"$PY" -m pip install -q -e ".[$EXTRAS]"
"$PY" -c "import torch, numpy, sympy; print('[setup] torch', torch.__version__, 'numpy', numpy.__version__)"
