# shellcheck shell=bash
# Shared by train.sh, guess.sh, guessDir.sh and test.sh: choose where tensorguess runs.
#
# TENSORGUESS_RUNTIME=auto|docker|native (default auto). Natively it runs from a
# project-managed virtual environment (TENSORGUESS_VENV, default .venv beside this
# project) created on first use with the pinned dependencies in constraints.txt;
# later runs reuse it and reinstall only when pyproject.toml or constraints.txt change.

TENSORGUESS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TENSORGUESS_VENV=${TENSORGUESS_VENV:-$TENSORGUESS_ROOT/.venv}

tensorguess_fail() {
  echo "tensorguess: error: $*" >&2
  exit 1
}

tensorguess_python() {
  # The interpreter that creates the virtual environment: 3.10 to 3.13 (TensorFlow 2.21's range).
  local candidate
  for candidate in "${TENSORGUESS_PYTHON:-}" python3.11 python3.12 python3.10 python3.13 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 13)))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  tensorguess_fail "no Python 3.10-3.13 found; install one, or set TENSORGUESS_PYTHON to its path"
}

tensorguess_install_key() {
  cat "$TENSORGUESS_ROOT/pyproject.toml" "$TENSORGUESS_ROOT/constraints.txt" | cksum | cut -d' ' -f1
}

# tensorguess_ensure_venv [EXTRAS]: create or update the virtual environment.
tensorguess_ensure_venv() {
  local extras=${1:-} stamp="$TENSORGUESS_VENV/.tensorguess-installed" key wanted log
  key=$(tensorguess_install_key)
  wanted="$key ${extras:-core}"
  if [ -x "$TENSORGUESS_VENV/bin/python" ] && [ -f "$stamp" ]; then
    # An environment installed with the test extras also serves the plain commands.
    if grep -qxF "$wanted" "$stamp" || { [ -z "$extras" ] && grep -q "^$key " "$stamp"; }; then
      return 0
    fi
  fi
  echo "tensorguess: setting up $TENSORGUESS_VENV (first run only; this takes a few minutes)..." >&2
  if [ ! -x "$TENSORGUESS_VENV/bin/python" ]; then
    "$(tensorguess_python)" -m venv "$TENSORGUESS_VENV" || tensorguess_fail "could not create $TENSORGUESS_VENV"
  fi
  log="$TENSORGUESS_VENV/install.log"
  local target="$TENSORGUESS_ROOT"
  [ -n "$extras" ] && target="$TENSORGUESS_ROOT[$extras]"
  if ! "$TENSORGUESS_VENV/bin/python" -m pip install --disable-pip-version-check \
      -c "$TENSORGUESS_ROOT/constraints.txt" -e "$target" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    tensorguess_fail "installing the dependencies failed (full log: $log)"
  fi
  { echo "$wanted"; grep -v "^$key " "$stamp" 2>/dev/null || true; } >"$stamp.new" && mv "$stamp.new" "$stamp"
}

tensorguess_runtime() {
  case "${TENSORGUESS_RUNTIME:-auto}" in
    auto | native) echo native ;;
    docker) tensorguess_fail "TENSORGUESS_RUNTIME=docker: no Docker image is available yet; use native" ;;
    *) tensorguess_fail "TENSORGUESS_RUNTIME must be auto, docker or native, not '$TENSORGUESS_RUNTIME'" ;;
  esac
}

# tensorguess_main COMMAND ARGS...: run `tensorguess COMMAND ARGS...` in the chosen runtime.
tensorguess_main() {
  local command=$1
  shift
  tensorguess_runtime >/dev/null
  tensorguess_ensure_venv
  exec "$TENSORGUESS_VENV/bin/python" -m tensorguess "$command" "$@"
}
