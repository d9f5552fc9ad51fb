#!/usr/bin/env bash
# One prepared run on a machine with a CUDA GPU (tools/device_check.py says what it checks):
#   tools/device_check.sh [--wheels DIR] [--out DIR] [--device cuda|cpu] [--tiny] [--budget SECONDS] ...
# --wheels DIR: pip-install the wheels of DIR (no index, no dependencies resolved) into a temporary folder put on
# PYTHONPATH first, for packages the machine lacks (PyAV, coloredlogs, humanfriendly). PYTHON picks the interpreter.
set -u
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
wheels=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels=${2:-}; shift 2 || { echo "error: --wheels needs a folder" >&2; exit 2; } ;;
        --wheels=*) wheels=${1#--wheels=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ -n "$wheels" ]; then
    site=$(mktemp -d "${TMPDIR:-/tmp}/device_check_site.XXXXXX")
    if ls "$wheels"/*.whl >/dev/null 2>&1 && "$PY" -m pip install -q --no-index --no-deps --no-compile \
            --no-cache-dir --target "$site" "$wheels"/*.whl; then
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
        export DEVICE_CHECK_WHEELS="installed from $wheels: $(cd "$wheels" && ls *.whl | tr '\n' ' ')"
    else
        echo "could not install the wheels of $wheels: going on without them"
        export DEVICE_CHECK_WHEELS="could not install the wheels of $wheels"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m tools.device_check ${args[@]+"${args[@]}"}
