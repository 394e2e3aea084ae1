#!/usr/bin/env bash
# Sort every image of SRC into DEST as <label>-<score>.<ext>, with a manifest.csv.
# Usage: bash guessDir.sh TF_FILES SRC DEST [flags]
set -euo pipefail
# shellcheck source=scripts/runtime.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/runtime.sh"
if [ $# -lt 3 ] && [[ " $* " != *" --help "* && " $* " != *" -h "* ]]; then
  echo "usage: bash guessDir.sh TF_FILES SRC DEST [flags]" >&2
  exit 2
fi
tensorguess_main sort "$@"
