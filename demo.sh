#!/usr/bin/env bash
# The README's three lines on the sample this repository ships: train on
# tf_files/data/<digit>/, label one photo of test_data/, sort test_data/ into classified/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
set -x
bash train.sh "$PWD/tf_files"
bash guess.sh "$PWD/tf_files" "$PWD/test_data/IMG_5549.JPG"
bash guessDir.sh "$PWD/tf_files" "$PWD/test_data" "$PWD/classified"
