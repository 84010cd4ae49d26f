"""Where the real recorded data lives for tests."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def data_file(name: str) -> Path:
    """A real-data file: the copies under examples/ (in the repository, so CI always has them),
    else the shared data directory next to the checkout (../shared/data)."""
    for folder in (ROOT / "examples" / "zeroeval-gsm8k", ROOT / "examples" / "zeroeval-math-l5",
                   ROOT / "examples" / "slm-mux-data",
                   ROOT.parent / "shared" / "data"):
        if (folder / name).exists():
            return folder / name
    return ROOT.parent / "shared" / "data" / name
