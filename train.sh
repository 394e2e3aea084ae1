#!/usr/bin/env bash
# Train a classifier on the photos in TF_FILES/data/<label>/ and write it into TF_FILES.
# Usage: bash train.sh TF_FILES [flags]   (bash train.sh --help lists the flags)
set -euo pipefail
# shellcheck source=scripts/runtime.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/runtime.sh"
if [ $# -lt 1 ]; then
  echo "usage: bash train.sh TF_FILES [flags]   (photos in TF_FILES/data/<label>/)" >&2
  exit 2
fi
tensorguess_main train "$@"
