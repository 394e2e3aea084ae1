#!/usr/bin/env bash
# Build the Docker image that train.sh, guess.sh and guessDir.sh run in, tagged tensorguess:<version>.
# Usage: bash build.sh [docker build flags]   (bash build.sh --help)
set -euo pipefail
# shellcheck source=scripts/runtime.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/runtime.sh"
case "${1:-}" in
  -h | --help)
    cat <<USAGE
usage: bash build.sh [docker build flags]

Builds the Docker image $(tensorguess_image) from this folder: TensorFlow's GPU
image with tensorguess and its pinned dependencies, and the embedded backbones
converted in advance, so a container needs no network. Once it is built,
train.sh, guess.sh and guessDir.sh run in it (TENSORGUESS_RUNTIME=auto), on the
GPU when Docker has the NVIDIA runtime.

Flags are passed to docker build. TENSORGUESS_IMAGE=NAME:TAG sets another tag.

example:
  bash build.sh
  bash build.sh --no-cache --progress=plain
USAGE
    exit 0
    ;;
esac
command -v docker >/dev/null 2>&1 || tensorguess_fail "docker is not installed; without it the wrappers run natively"
tensorguess_build_image "$@"
echo "Built $(tensorguess_image)"
