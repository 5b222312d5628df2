"""Aligner speed on the demo corpus with the ids `tweety adapt` aligns (SmolLM2 tokens against an adapted model's
Spanish tokens): the torch aligner (on the GPU when there is one, else the CPU) against fast_align (systran-align,
CPU). No gold links needed (benchmarks/align.py measures quality against Strong's
numbers). Usage: python benchmarks/align_speed.py --tokenizer ADAPTED_MODEL_DIR [--lines 30423] [--json F]
    [--fast-align-bin DIR]
--fast-align-bin: a folder with clab's `fast_align` and `atools` programs (built from github.com/clab/fast_align),
timed on the same ids with the wheel's settings (-d -o -v, both directions, grow-diag-final-and), with one OpenMP
thread as the wheel runs and with every core. For machines the wheel has no build for (it is cp311-only here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEMO

from core import models, resources
from core.align import AlignSettings, align_ids
from core.errors import TweetyError
from core.tokenizer import encode_many, load_tokenizer


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokenizer", required=True, help="folder with the target tokenizer (an adapted model)")
    p.add_argument("--lines", type=int, default=30423)
    p.add_argument("--json")
    p.add_argument("--fast-align-bin", help="folder with clab's fast_align and atools programs")
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
        try:
            align_ids(source, target, settings)
        except TweetyError as e:  # the wheel is optional and has no build for every Python
            print(f"{name:<20} skipped: {e}", flush=True)
            continue
        results[name] = round(time.monotonic() - start, 2)
        print(f"{name:<20} {results[name]:8.2f} s  ({len(source):,} pairs)", flush=True)
    if a.fast_align_bin:
        for threads in (1, os.cpu_count() or 1):
            name = f"fast_align binary ({threads} thread{'s' if threads > 1 else ''})"
            results[name] = clab_fast_align(Path(a.fast_align_bin), source, target, threads)
            print(f"{name:<20} {results[name]:8.2f} s  ({len(source):,} pairs)", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"pairs": len(source), "seconds": results}, indent=1))


def clab_fast_align(bin_dir: Path, source, target, threads: int) -> float:
    """Seconds for clab's fast_align in both directions (as the wheel trains them: -d -o -v, 5 iterations) and
    atools' grow-diag-final-and, on the same token ids written as words."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="align-speed-") as work:
        corpus = Path(work) / "corpus.txt"
        with corpus.open("w") as f:
            for s, t in zip(source, target):
                f.write(f"{' '.join(map(str, s.tolist()))} ||| {' '.join(map(str, t.tolist()))}\n")
        start = time.monotonic()
        for direction, extra in (("forward", []), ("reverse", ["-r"])):
            with open(Path(work) / direction, "w") as out:
                cmd = [str(bin_dir / "fast_align"), "-i", str(corpus), "-d", "-o", "-v", "-I", "5", *extra]
                subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env, check=True)
        with open(Path(work) / "gdfa", "w") as out:
            cmd = [str(bin_dir / "atools"), "-i", f"{work}/forward", "-j", f"{work}/reverse"]
            cmd += ["-c", "grow-diag-final-and"]
            subprocess.run(cmd, stdout=out, check=True)
        return round(time.monotonic() - start, 2)


if __name__ == "__main__":
    main()
