"""Progress bars on standard error, quiet when nobody watches (not a terminal)."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_bar(total: int, description: str, unit: str = "img") -> tqdm:
    """A tqdm bar for long work; TENSORGUESS_PROGRESS=1 forces it on, 0 off."""
    forced = os.environ.get("TENSORGUESS_PROGRESS")
    disable = (not sys.stderr.isatty()) if forced is None else forced == "0"
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        disable=disable,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )
