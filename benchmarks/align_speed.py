"""Aligner speed on the demo corpus with the ids `tweety adapt` aligns (SmolLM2 tokens against an adapted model's
Spanish tokens): the torch aligner (on the GPU when there is one, else the CPU) against fast_align (systran-align,
CPU). No gold links needed (benchmarks/align.py measures quality against Strong's
numbers). Usage: python benchmarks/align_speed.py --tokenizer ADAPTED_MODEL_DIR [--lines 30423] [--json F]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import DEMO

from core import models, resources
from core.align import AlignSettings, align_ids
from core.tokenizer import encode_many, load_tokenizer


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokenizer", required=True, help="folder with the target tokenizer (an adapted model)")
    p.add_argument("--lines", type=int, default=30423)
    p.add_argument("--json")
    a = p.parse_args()
    en = resources.read_lines(DEMO / "bible.train.en.gz")[: a.lines]
    es = resources.read_lines(DEMO / "bible.train.es.gz")[: a.lines]
    source = [np.asarray(x) for x in encode_many(models.load_tokenizer(models.DEFAULT_MODEL), en)]
    target = [np.asarray(x) for x in encode_many(load_tokenizer(a.tokenizer), es)]
    keep = [k for k in range(len(source)) if len(source[k]) and len(target[k])]
    source, target = [source[k] for k in keep], [target[k] for k in keep]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {}
    for name, settings in (
        ("torch (" + device + ")", AlignSettings(method="torch", device=device)),
        ("fast_align (CPU)", AlignSettings(method="fast_align")),
    ):
        start = time.monotonic()
        align_ids(source, target, settings)
        results[name] = round(time.monotonic() - start, 2)
        print(f"{name:<20} {results[name]:8.2f} s  ({len(source):,} pairs)", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"pairs": len(source), "seconds": results}, indent=1))


if __name__ == "__main__":
    main()
