"""Word-alignment quality and speed: our torch aligner against fast_align (systran-align) and eflomal, in one run.

Gold links come from Strong's numbers: in the SWORD modules of the King James Version (engKJV2006eb) and the
Reina-Valera 1909 (spaRV1909eb) most words carry the Strong's number of the Hebrew/Greek word they translate, so an
English word and a Spanish word of the same verse are a gold link when they share a number. Precision counts only the
predicted links between two tagged words (untagged words — articles, "of", punctuation — have no gold); recall is over
all gold links. Gold phrases are many-to-many ("y la tierra" ↔ "earth"), so recall stays well below 1 for any aligner
that links one word to one word; it compares aligners, it is not an absolute figure.

Needs `apt-get install sword-text-kjv sword-text-sparv` (the parsed verses are cached in --cache) and, for the eflomal
row, `pip install eflomal`. All verses of the Bible (~31k pairs), words lower-cased, punctuation split off.
`--downstream` also runs what `tweety adapt` does with each aligner on the demo corpus — SmolLM2 tokens against the
16k-piece Spanish tokenizer — and reports that alignment's time and the held-out bits per byte of the model
trans-tokenized from it (before any fine-tuning): the figure the aligner is chosen by.
Usage: python benchmarks/align.py [--aligners torch,fast_align,eflomal] [--device cpu|cuda] [--limit N] [--downstream]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from common import DEMO, ROOT

from core import align, init, mapping, models, resources, tokenizer
from core.align import AlignSettings, Links, align_ids
from core.errors import TweetyError
from core.evaluate import bits_per_byte

MODULES = ("engKJV2006eb", "spaRV1909eb")
WORD = re.compile(r"\w+|[^\w\s¶]")
MARKUP = re.compile(r"<w\b([^>]*)>(.*?)</w>|<[^>]*>|([^<]+)", re.S)


@dataclass(frozen=True)
class Verse:
    words: list[str]
    strongs: list[list[int]]  # per word: Strong's numbers (H → +0, G → +10000), empty when untagged


def parse_osis(raw: str) -> Verse:
    """Words and their Strong's numbers from one verse of OSIS markup (notes dropped, other tags ignored)."""
    raw = re.sub(r"<note\b.*?</note>", " ", raw, flags=re.S)
    words: list[str] = []
    strongs: list[list[int]] = []
    for m in MARKUP.finditer(raw):
        attributes, tagged, text = m.groups()
        if m.group(0).startswith("<") and tagged is None:
            continue
        numbers = [
            int(n) + (10000 if kind == "G" else 0) for kind, n in re.findall(r"strong:([GH])(\d+)", attributes or "")
        ]
        for w in WORD.findall(re.sub(r"<[^>]*>", " ", tagged if tagged is not None else text)):
            words.append(w.lower())
            strongs.append(numbers)
    return Verse(words, strongs)


def read_bible(sword: str, cache: Path) -> list[tuple[Verse, Verse]]:
    """Verse pairs (English, Spanish) with Strong's numbers, parsed once and cached."""
    if cache.exists():
        with gzip.open(cache, "rt", encoding="utf-8") as f:
            return [tuple(Verse(**v) for v in pair) for pair in json.load(f)]
    try:
        from pysword.modules import SwordModules
    except ImportError:
        raise TweetyError("pysword is not installed", fix="pip install pysword") from None
    modules = SwordModules(sword)
    found = modules.parse_modules()
    missing = [m for m in MODULES if m not in found]
    if missing:
        raise TweetyError(
            f"SWORD modules {', '.join(missing)} not found",
            path=sword,
            fix="apt-get install sword-text-kjv sword-text-sparv",
        )
    bibles = [modules.get_bible_from_module(m) for m in MODULES]
    pairs = []
    for testament in ("ot", "nt"):
        for book in bibles[0].get_structure().get_books()[testament]:
            print(f"  reading {book.name}", end="\r", flush=True)
            for chapter, n_verses in enumerate(book.chapter_lengths, start=1):
                verses = list(range(1, n_verses + 1))
                raw = [
                    b.get(books=[book.name], chapters=[chapter], verses=verses, clean=False, join="\x00").split("\x00")
                    for b in bibles
                ]
                for en, es in zip(*raw):
                    pair = (parse_osis(en), parse_osis(es))
                    if pair[0].words and pair[1].words:
                        pairs.append(pair)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(cache, "wt", encoding="utf-8") as f:
        json.dump([[v.__dict__ for v in pair] for pair in pairs], f)
    return pairs


def ids(sentences: list[list[str]]) -> list[np.ndarray]:
    vocab: dict[str, int] = {}
    return [np.array([vocab.setdefault(w, len(vocab)) for w in s], np.int64) for s in sentences]


def score(links: Links, pairs: list[tuple[Verse, Verse]]) -> tuple[float, float, float]:
    """Precision (over links between tagged words), recall, and AER with the gold as both sure and possible."""
    predicted = links.of_pair()
    correct = judged = gold = 0
    for k, (en, es) in enumerate(pairs):
        en_tags = [set(s) for s in en.strongs]
        es_tags = [set(s) for s in es.strongs]
        for i, a in enumerate(en_tags):
            gold += sum(1 for b in es_tags if a & b)
        for i, j in predicted[k] if k < len(predicted) else ():
            if en_tags[i] and es_tags[j]:
                judged += 1
                correct += bool(en_tags[i] & es_tags[j])
    precision, recall = correct / max(judged, 1), correct / max(gold, 1)
    return precision, recall, 1 - 2 * correct / max(judged + gold, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sword", default="/usr/share/sword")
    p.add_argument("--cache", default=str(ROOT / "demo-output" / "strongs-kjv-rv1909.json.gz"))
    p.add_argument("--aligners", default="torch,fast_align,eflomal")
    p.add_argument("--device", default="auto", help="torch aligner's device")
    p.add_argument("--limit", type=int, help="only the first N verse pairs")
    p.add_argument("--repeat", type=int, default=1, help="time each aligner N times, keep the fastest")
    p.add_argument("--downstream", action="store_true", help="also adapt SmolLM2 with each aligner's token links")
    p.add_argument(
        "--tokenizer",
        default=str(ROOT / "demo-output" / "tokenizer"),
        help="target tokenizer for --downstream (make demo writes it)",
    )
    p.add_argument("--max-bytes", type=int, default=30000, help="held-out Spanish bytes evaluated by --downstream")
    a = p.parse_args()
    if a.downstream:
        downstream(a)
        return

    pairs = read_bible(a.sword, Path(a.cache))[: a.limit]
    source, target = ids([en.words for en, _ in pairs]), ids([es.words for _, es in pairs])
    print(
        f"{len(pairs):,} verse pairs, {sum(map(len, source)):,} English and {sum(map(len, target)):,} Spanish "
        f"words; {os.cpu_count()} CPU cores"
    )
    print(
        f"{'aligner':<11} {'symmetrization':<20} {'seconds':>8} {'links':>9} {'precision':>9} {'recall':>7} {'AER':>6}"
    )
    for method, how in combinations(a.aligners):
        settings = AlignSettings(method=method, symmetrize=how, device=a.device)
        seconds = []
        for _ in range(a.repeat):
            start = time.monotonic()
            links = align_ids(source, target, settings)
            seconds.append(time.monotonic() - start)
        precision, recall, aer = score(links, pairs)
        print(
            f"{method:<11} {how:<20} {min(seconds):8.1f} {len(links):9,} {precision:9.3f} {recall:7.3f} {aer:6.3f}",
            flush=True,
        )


def combinations(aligners: str) -> list[tuple[str, str]]:
    """Each aligner with each symmetrization it offers (the fast_align wheel returns grow-diag-final-and only)."""
    return [
        (method, how)
        for method in aligners.split(",")
        for how in ("grow-diag-final-and", "intersection")
        if not (method == "fast_align" and how == "intersection")
    ]


def downstream(a: argparse.Namespace) -> None:
    """Token-level alignment of the demo corpus with each aligner, then map → init → held-out bits per byte."""
    corpus = resources.read_parallel(DEMO / "bible.train.en.gz", DEMO / "bible.train.es.gz")
    heldout = resources.head_bytes(resources.read_text(DEMO / "bible.heldout.es.gz"), a.max_bytes)
    model, source_tok = models.load_model(models.DEFAULT_MODEL)
    target_tok = tokenizer.load_tokenizer(a.tokenizer)
    print(
        f"{len(corpus):,} demo verse pairs in SmolLM2 tokens × {len(target_tok):,} Spanish pieces; held-out "
        f"{len(heldout.encode()):,} bytes"
    )
    print(
        f"{'aligner':<11} {'symmetrization':<20} {'align s':>8} {'links':>9} {'from alignment':>15} {'bits/byte':>10}"
    )
    for method, how in combinations(a.aligners):
        with tempfile.TemporaryDirectory() as work:
            stats = align.align_corpus(
                corpus, source_tok, target_tok, work, AlignSettings(method=method, symmetrize=how, device=a.device)
            )
            m = mapping.build_mapping(source_tok, target_tok, alignment_counts=align.load_counts(work))
        adapted = init.initialise(copy.deepcopy(model), m)
        bpb = bits_per_byte(adapted, target_tok, heldout).bits_per_byte
        print(
            f"{method:<11} {how:<20} {stats.seconds:8.1f} {stats.links:9,} "
            f"{m.coverage().get('alignment', 0):15,} {bpb:10.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
