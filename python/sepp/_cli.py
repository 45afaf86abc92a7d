"""Console entry points: ``sepp-bench`` runs the C++ executable shipped inside the package."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _executable(name: str) -> Path:
    path = Path(__file__).resolve().parent / "bin" / name
    if not path.is_file():
        raise SystemExit(f"{name}: the executable is missing from the sepp package ({path}); reinstall sepp")
    return path


def bench_main() -> None:
    exe = _executable("sepp-bench")
    os.execv(str(exe), [str(exe), *sys.argv[1:]])


if __name__ == "__main__":  # pragma: no cover
    bench_main()
