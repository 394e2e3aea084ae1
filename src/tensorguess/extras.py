"""Optional extras: heavy packages only one feature needs, installed the first time it runs.

`export` (tf2onnx, onnx, ONNX Runtime, LiteRT: about 170 MB) serves `tensorguess export`,
`train.sh --export` and `--model FILE.tflite|FILE.onnx`. `int8` (NNCF, about 20 MB beside
what tensorguess has already) serves `train --engine openvino-int8`. `serve` (FastAPI,
uvicorn and their kin, a few MB) serves `tensorguess serve`. In a source checkout (what the
wrappers run) the first use installs `tensorguess[<extra>]` into the running environment
with the pins of constraints.txt, saying so in one line; the Docker image has them already.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

from tensorguess.errors import TensorguessError

# extra -> (the modules it provides, its packages as the message names them)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "export": (
        ("tf2onnx", "onnx", "onnxruntime", "ai_edge_litert"),
        "tf2onnx, onnx, onnxruntime, ai-edge-litert",
    ),
    "int8": (("nncf",), "nncf"),
    "serve": (
        ("fastapi", "fastapi_offline", "python_multipart", "uvicorn", "httptools"),
        "fastapi, fastapi-offline, python-multipart, uvicorn, httptools",
    ),
}
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` this environment lacks."""
    modules, _ = EXTRAS[extra]
    return [module for module in modules if importlib.util.find_spec(module) is None]


def require_extra(extra: str) -> None:
    """Make sure `extra` is installed: install it now (once) from this checkout, or say how."""
    if not missing_modules(extra):
        return
    _, packages = EXTRAS[extra]
    constraints = PROJECT_ROOT / "constraints.txt"
    if not (PROJECT_ROOT / "pyproject.toml").is_file() or not constraints.is_file():
        raise TensorguessError(
            f"this needs the {extra} extra ({packages}): pip install 'tensorguess[{extra}]'"
        )
    print(
        f"tensorguess: installing the {extra} extra ({packages}) into {sys.prefix} "
        "(first use only; about a minute)...",
        file=sys.stderr,
    )
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
        "-c",
        str(constraints),
        "-e",
        f"{PROJECT_ROOT}[{extra}]",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    importlib.invalidate_caches()
    if result.returncode != 0 or missing_modules(extra):
        log = (result.stderr or result.stdout).strip().splitlines()
        raise TensorguessError(
            f"installing the {extra} extra failed ({log[-1] if log else 'no output'}); "
            f"install it yourself: {sys.executable} -m pip install -c {constraints} "
            f"-e '{PROJECT_ROOT}[{extra}]'"
        )
