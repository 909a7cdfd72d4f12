#!/usr/bin/env bash
# Installs Arize Phoenix into its own uv-managed venv (never amm's), cached between runs.
# Idempotent: a venv that already has the pinned version is left alone.
#   AMM_PHOENIX_VENV  where (default ~/.cache/amm-phoenix/venv; the tests read the same)
#   PHOENIX_VERSION   which (default the version amm is tested with)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${AMM_PHOENIX_VENV:-$HOME/.cache/amm-phoenix/venv}"
VERSION="${PHOENIX_VERSION:-20.26.1}"
UV="${UV:-.tools/bin/uv}"
PYTHON="${PYTHON:-python3}"
export UV_PYTHON_DOWNLOADS=never

if [ -x "$VENV/bin/phoenix" ] && [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("arize-phoenix"))' 2>/dev/null)" = "$VERSION" ]; then
    echo "Phoenix $VERSION already in $VENV"
    exit 0
fi
start=$(date +%s)
"$UV" venv --quiet --python "$(command -v "$PYTHON")" "$VENV"
VIRTUAL_ENV="$VENV" "$UV" pip install --quiet "arize-phoenix==$VERSION"
echo "Phoenix $VERSION installed in $VENV in $(( $(date +%s) - start )) s"
