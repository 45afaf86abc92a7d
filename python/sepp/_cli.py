"""Console entry points: ``sepp-bench`` runs the C++ executable shipped inside the package."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional


def _packaged(name: str) -> Path:
    """Where the package keeps the executable ``name`` (whether or not it is there)."""
    return Path(__file__).resolve().parent / "bin" / name


def sepp_bench_executable() -> Optional[Path]:
    """The ``sepp-bench`` executable: ``$SEPP_BENCH_EXE`` when it is set, else the one shipped in the package; None
    when it is not set and the package has none."""
    env = os.environ.get("SEPP_BENCH_EXE")
    if env:
        return Path(env)
    path = _packaged("sepp-bench")
    return path if path.is_file() else None


def bench_main() -> None:
    exe = sepp_bench_executable()
    if exe is None:
        raise SystemExit(
            f"sepp-bench: the executable is missing from the sepp package ({_packaged('sepp-bench')}); reinstall sepp"
        )
    os.execv(str(exe), [str(exe), *sys.argv[1:]])


if __name__ == "__main__":  # pragma: no cover
    bench_main()
