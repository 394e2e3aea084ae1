#!/usr/bin/env bash
# Run the whole test suite: sets up the project virtual environment (with the test and
# serve extras) on first use, checks the code style with ruff, then runs pytest in two
# worker processes (pytest-xdist; each test file whole in one worker),
# which keeps both cores busy while the other waits on a subprocess. Extra arguments go to
# pytest; `-n 0` runs in one process.
set -euo pipefail
# shellcheck source=scripts/runtime.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/runtime.sh"
tensorguess_ensure_venv test,serve
cd "$TENSORGUESS_ROOT"
"$TENSORGUESS_VENV/bin/ruff" check --quiet src tests
workers=(-n 2 --dist loadfile)
for argument in "$@"; do
  case "$argument" in
    -n | -n* | --numprocesses*) workers=() ;;
  esac
done
exec "$TENSORGUESS_VENV/bin/python" -m pytest ${workers[@]+"${workers[@]}"} "$@"
