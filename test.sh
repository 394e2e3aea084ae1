#!/usr/bin/env bash
# Run the whole test suite: sets up the project virtual environment (with the test and
# serve extras) on first use, checks the code style with ruff, then runs pytest. Extra
# arguments go to pytest.
set -euo pipefail
# shellcheck source=scripts/runtime.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/runtime.sh"
tensorguess_ensure_venv test,serve
cd "$TENSORGUESS_ROOT"
"$TENSORGUESS_VENV/bin/ruff" check --quiet src tests
exec "$TENSORGUESS_VENV/bin/python" -m pytest "$@"
