"""What every benchmark shares: the repository's paths and a stage timer that prints as it goes."""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "resources" / "demo"
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


class StageTimer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, fn, *args, **kw):
        start = time.monotonic()
        result = fn(*args, **kw)
        self.seconds[stage] = round(time.monotonic() - start, 2)
        print(f"  {stage:<22} {self.seconds[stage]:7.2f} s", flush=True)
        return result
