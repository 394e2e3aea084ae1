#!/usr/bin/env bash
# The Docker image, built and run for real (CI's step after the suite; docs/docker.md): a
# Docker engine (Debian's docker.io, started here without a bridge network unless one already
# answers), a local stand-in for the FROM line's base image (scripts/docker_base.sh), then
# `bash build.sh` and tests/test_docker_run.py, which runs train.sh, guess.sh and guessDir.sh
# in containers as a user who is not root. Each step says how long it took. An engine this
# script started is stopped at the end. Needs root (apt-get, dockerd, debootstrap).
# Usage: bash scripts/docker_check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/docker_steps.sh
source scripts/docker_steps.sh

LOG=${TENSORGUESS_DOCKERD_LOG:-/var/tmp/tensorguess-dockerd.log}
started_engine=

stop_engine() {
  if [ -n "$started_engine" ] && kill -0 "$started_engine" 2>/dev/null; then
    kill "$started_engine"
    # dockerd stops its containerd and containers first; give it the time it takes.
    for _ in $(seq 60); do
      kill -0 "$started_engine" 2>/dev/null || break
      sleep 1
    done
    say "stopped the Docker engine it started (pid $started_engine)"
  fi
}
trap stop_engine EXIT

case "${1:-}" in
  -h | --help)
    sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 0
    ;;
esac

[ "$(id -u)" = 0 ] || fail "run it as root: it installs packages, starts dockerd and runs debootstrap"

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# start_engine: a dockerd without a bridge (containers get the host's network or none, so
# nothing goes to a private address range), or the engine that already answers.
start_engine() {
  if docker info >/dev/null 2>&1; then
    say "using the Docker engine that already answers"
    return 0
  fi
  dockerd --bridge=none --iptables=false --ip-masq=false >"$LOG" 2>&1 &
  started_engine=$!
  for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$started_engine" 2>/dev/null; then
      break
    fi
    sleep 1
  done
  tail -n 15 "$LOG" >&2
  fail "dockerd did not come up (log above, whole in $LOG): Docker cannot run here, so the image cannot be checked"
}

# check_engine: an engine that can build and run this image, or a clear reason why not.
check_engine() {
  local driver cgroup
  driver=$(docker info --format '{{.Driver}}')
  cgroup=$(docker info --format '{{.CgroupVersion}}')
  say "engine $(docker info --format '{{.ServerVersion}}'), storage driver $driver, cgroup v$cgroup"
  case "$driver" in
    overlay2 | fuse-overlayfs) ;;
    *) fail "the storage driver is '$driver', not overlay2: without overlayfs every layer of the 4 GB image is a full copy; the image is not checked here" ;;
  esac
  [ -n "$cgroup" ] || fail "the engine sees no cgroups, so it cannot run containers; the image is not checked here"
}

start=$SECONDS
timed "installing docker.io and debootstrap" install_packages ||
  fail "could not install docker.io and debootstrap with apt-get"
timed "starting the Docker engine" start_engine
check_engine
timed "the stand-in base image" bash scripts/docker_base.sh ||
  fail "the stand-in base image could not be made (above); if a container could not start, Docker cannot run here"
timed "bash build.sh --network host" bash build.sh --network host ||
  fail "bash build.sh failed (above)"
timed "tests/test_docker_run.py" env TENSORGUESS_DOCKER_TESTS=1 bash test.sh -n 0 tests/test_docker_run.py ||
  fail "the commands in containers did not do what they do natively (above)"
say "all done in $((SECONDS - start)) s"
