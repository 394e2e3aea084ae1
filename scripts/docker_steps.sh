# shellcheck shell=bash
# Shared by scripts/docker_base.sh and scripts/docker_check.sh: messages that name the script,
# and steps that say how long they took.

DOCKER_STEPS_NAME=$(basename "$0" .sh)

say() {
  echo "$DOCKER_STEPS_NAME: $*" >&2
}

fail() {
  echo "$DOCKER_STEPS_NAME: error: $*" >&2
  exit 1
}

# timed NAME COMMAND...: run COMMAND, say how long it took, and return its status.
timed() {
  local name=$1 start=$SECONDS status=0
  shift
  "$@" || status=$?
  say "$name took $((SECONDS - start)) s"
  return "$status"
}
