#!/usr/bin/env bash
# The whole workflow on a sample dataset, for a fresh clone with no photos of its own:
# draw sample photos of shapes into demo/tf_files/data/<shape>/, train, label one
# image, then sort a folder of unlabelled images into demo/sorted/.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
demo="$here/demo"
# shellcheck source=scripts/runtime.sh
source "$here/scripts/runtime.sh"
tensorguess_ensure_venv

if [ ! -d "$demo/tf_files/data" ]; then
  "$TENSORGUESS_VENV/bin/python" -m tensorguess sample-data "$demo/tf_files"
fi
echo "== bash train.sh demo/tf_files"
bash "$here/train.sh" "$demo/tf_files"
echo "== bash guess.sh demo/tf_files demo/tf_files/test_images/photo_00.jpg"
bash "$here/guess.sh" "$demo/tf_files" "$demo/tf_files/test_images/photo_00.jpg"
echo "== bash guessDir.sh demo/tf_files demo/tf_files/test_images demo/sorted"
rm -rf "$demo/sorted"  # the demo's own output from a previous run
bash "$here/guessDir.sh" "$demo/tf_files" "$demo/tf_files/test_images" "$demo/sorted"
ls "$demo/sorted"
