#!/usr/bin/env bash
# Label images with the classifier in TF_FILES: one line per label, best first.
# Usage: bash guess.sh TF_FILES IMAGE [IMAGE ...] [flags]
set -euo pipefail
# shellcheck source=scripts/runtime.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/runtime.sh"
if [ $# -lt 2 ] && [[ " $* " != *" --help "* && " $* " != *" -h "* ]]; then
  echo "usage: bash guess.sh TF_FILES IMAGE [IMAGE ...] [flags]" >&2
  exit 2
fi
tensorguess_main guess "$@"
