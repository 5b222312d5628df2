"""Speed of the adaptation stages on the full demo corpus (~30k verse pairs): alignment + mapping + init.

Target (issue "Core spine"): alignment + mapping + init ≤ 60 s on a 2-core machine. Prints each stage's time.
Usage: python benchmarks/pipeline_speed.py [--vocab-size 16000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import DEMO, StageTimer

from core import align, init, mapping, models, resources, tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab-size", type=int, default=16000)
    a = p.parse_args()
    timed = StageTimer()
    times = timed.seconds

    print(f"{os.cpu_count()} CPU cores")
    corpus = timed("read corpus", resources.read_parallel, DEMO / "bible.train.en.gz", DEMO / "bible.train.es.gz")
    model, source_tok = timed("load model", models.load_model, models.DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        timed(
            "tokenizer",
            tokenizer.train_tokenizer,
            corpus.target,
            source_tok,
            work / "tok",
            tokenizer.TokenizerSettings(vocab_size=a.vocab_size),
        )
        target_tok = tokenizer.load_tokenizer(work / "tok")
        stats = timed("align", align.align_corpus, corpus, source_tok, target_tok, work / "align")
        m = timed(
            "map", mapping.build_mapping, source_tok, target_tok, alignment_counts=align.load_counts(work / "align")
        )
        timed("save mapping", m.save, work / "map", target_tok, source_tok)
        timed("init", init.initialise, model, m)
    core = times["align"] + times["map"] + times["save mapping"] + times["init"]
    print(f"{stats.pairs:,} pairs, {stats.source_tokens:,} + {stats.target_tokens:,} tokens, {stats.links:,} links")
    print(f"align + map + init: {core:.1f} s (target ≤ 60 s) — {'OK' if core <= 60 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
