"""What every benchmark shares: the repository's paths and a stage timer that prints as it goes."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
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


@dataclass
class Demo:
    """The demo set-up most benchmarks start from: the training verses, the held-out Spanish text (its first
    `max_bytes`), SmolLM2, and a target tokenizer trained on the Spanish side into OUT/tokenizer."""

    corpus: object  # core.resources.ParallelCorpus
    heldout: str
    model: object
    source_tok: object
    target_tok: object


def demo_setup(timed: StageTimer, out: Path, vocab_size: int, max_bytes: int) -> Demo:
    from core import models, resources, tokenizer

    corpus = timed("read corpus", resources.read_parallel, DEMO / "bible.train.en.gz", DEMO / "bible.train.es.gz")
    heldout = resources.head_bytes(resources.read_text(DEMO / "bible.heldout.es.gz"), max_bytes)
    model, source_tok = timed("load source model", models.load_model, models.DEFAULT_MODEL)
    timed(
        "train tokenizer",
        tokenizer.train_tokenizer,
        corpus.target,
        source_tok,
        out / "tokenizer",
        tokenizer.TokenizerSettings(vocab_size=vocab_size),
    )
    return Demo(corpus, heldout, model, source_tok, tokenizer.load_tokenizer(out / "tokenizer"))
