"""The benchmark: its old ways do the same work as ours, and the command prints the table."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from helpers import draw_photos, tensorguess
from tensorguess.bench.baselines import legacy_sort


def test_the_2016_loop_sorts_as_guessdir_does(trained, tmp_path):
    tf_files, _ = trained
    source = tmp_path / "photos"
    draw_photos(source, "circle", 3, seed=41)
    draw_photos(source, "square", 3, seed=41)
    legacy_sort(
        str(tf_files / "retrained_graph.pb"),
        str(tf_files / "retrained_labels.txt"),
        str(source),
        str(tmp_path / "old"),
    )
    tensorguess("sort", tf_files, source, tmp_path / "ours")
    # The old loop names copies <n>-<label>-<score>.jpg, n counting the sources in sorted
    # order; ours are listed in the manifest, source by source.
    names = sorted(path.name for path in source.iterdir())
    theirs = {}
    for path in (tmp_path / "old").iterdir():
        number, label, score = re.fullmatch(r"(\d+)-(\w+)-([\d.]+)\.jpg", path.name).groups()
        theirs[names[int(number)]] = (label, float(score))
    with open(tmp_path / "ours" / "manifest.csv", newline="") as stream:
        ours = {Path(row["source"]).name: row for row in csv.DictReader(stream)}
    assert sorted(theirs) == sorted(ours) == names
    for name, (label, score) in theirs.items():
        assert ours[name]["label"] == label, name
        assert abs(float(ours[name]["score"]) - score) < 0.1, name  # decoders, precisions
    assert sorted(label for label, _ in theirs.values()) == ["circle"] * 3 + ["square"] * 3


def test_a_quick_bench_measures_ours_beside_the_old_ways(tmp_path):
    photos = tmp_path / "photos"
    # The fewest photos and epochs that still give every row: each step's own process
    # start-up, not its photos, is most of the time here.
    draw_photos(photos / "circle", "circle", 5, seed=42)
    draw_photos(photos / "square", "square", 5, seed=42)
    output = tmp_path / "benchmarks.md"
    result = tensorguess(
        "bench",
        photos,
        tmp_path / "work",
        "--epochs",
        "2",
        "--many",
        "12",
        "--output",
        output,
        "--quick",
        TENSORGUESS_PROGRESS="0",
    )
    table = output.read_text()
    assert result.stdout == table
    assert "    tensorguess bench " in table
    rows = {
        cells[1].strip(): cells[2].strip()
        for cells in (line.split("|") for line in table.splitlines() if line.startswith("| "))
    }
    assert re.fullmatch(r"\d+ images/s", rows["feature extraction, warm cache"])
    assert any(name.startswith("feature extraction, cold cache, openvino") for name in rows)
    assert not any("tensorflow" in name or "default preset" in name for name in rows)  # quick
    assert re.fullmatch(r"[\d.]+ s", rows["train --preset fast, warm cache (2 epochs)"])
    assert not any("Keras" in name for name in rows)  # quick
    assert re.fullmatch(r"[\d.]+x", rows["ratio: 2016 loop / guessDir (first run)"])
    assert re.fullmatch(r"[\d.]+ images/s", rows["guessDir, 12 images (wall)"])
    # The stage profile: every stage of a sort, their shares adding up to the whole.
    stages = [value for name, value in rows.items() if name.startswith("guessDir stage alone:")]
    shares = [int(re.fullmatch(r"[\d.]+ ms/photo \((\d+)%\)", value).group(1)) for value in stages]
    assert len(shares) == 5 and 97 <= sum(shares) <= 103
    assert float(rows["guessDir (whole command) / decoding alone"]) > 0
    # The many-images run sorted every one of them.
    sorted_copies = [p for p in (tmp_path / "work" / "many-sorted").iterdir() if p.suffix == ".jpg"]
    assert len(sorted_copies) == 12


def test_bench_refuses_a_folder_that_is_not_laid_out_by_label(tmp_path):
    draw_photos(tmp_path / "flat", "circle", 2, seed=43)
    result = tensorguess("bench", tmp_path / "flat", tmp_path / "work", check=False)
    assert result.returncode == 1
    assert "needs one sub-folder of photos per label" in result.stderr
    missing = tensorguess("bench", tmp_path / "nowhere", tmp_path / "work", check=False)
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        == f"tensorguess: error: {tmp_path / 'nowhere'}: no such folder of photos"
    )
