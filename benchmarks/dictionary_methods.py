"""The two ways of turning a dictionary into mapping evidence that measured worse than whole words
(docs/results/dictionary.md) and left the product on 2026-12-03; kept here so that their rows can be reproduced.

- `entry_counts` (the first method, "every piece × every piece"): each entry links every target token of the target
  word to every source token of the source word — frequent sub-word pieces (`en`, `ción`) collect links from
  hundreds of unrelated entries (+17% bits per byte against FVT).
- `pseudo_parallel_counts`: the target text translated word by word with the reversed dictionary (each word's
  heaviest source word; words the dictionary lacks — names, numbers, cognates — copied as they are) is a
  pseudo-parallel corpus in the target's own word order; the token aligner (`core.align`) links pieces in context,
  and the alignment thresholds (pairs seen ≥ 5 times, tokens with ≥ 20 links) keep only confident links (+3.2%).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from core.align import AlignSettings, count_links
from core.dictionary import _fold, _recase, translations
from core.jobs import Reporter
from core.resources import DictionaryEntry
from core.tokenizer import encode_many

_WORD = re.compile(r"\w+|[^\w\s]+")
MIN_PAIR_COUNT = 5  # pseudo-parallel: links seen fewer times are dropped
MIN_TOKEN_COUNT = 20  # pseudo-parallel: target tokens with fewer links get no evidence
MAX_LINES = 50_000  # pseudo-parallel: at most this many lines of target text are translated and aligned


def entry_counts(entries: Sequence[DictionaryEntry], source_tokenizer, target_tokenizer) -> sp.csr_matrix:
    """The first method: each entry links every target token of the target word to every source token of the
    source word; an entry's weight is spread evenly so that long words do not outvote short ones."""
    shape = (len(target_tokenizer), len(source_tokenizer))
    if not entries:
        return sp.csr_matrix(shape, dtype=np.float64)
    # Words appear after a space in running text, so that is the form whose tokens we want on both sides.
    tgt = target_tokenizer([" " + e.target for e in entries], add_special_tokens=False)["input_ids"]
    src = source_tokenizer([" " + e.source for e in entries], add_special_tokens=False)["input_ids"]
    rows, cols, vals = [], [], []
    for e, t_ids, s_ids in zip(entries, tgt, src):
        if not t_ids or not s_ids:
            continue
        w = e.weight / (len(t_ids) * len(s_ids))
        for t in t_ids:
            rows.extend([t] * len(s_ids))
            cols.extend(s_ids)
            vals.extend([w] * len(s_ids))
    return sp.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float64)


def translate_word_by_word(lines: Sequence[str], entries: Sequence[DictionaryEntry]) -> list[str]:
    """Each target line with every word replaced by its likeliest source word (`translations`; case carried
    over); words the dictionary lacks and punctuation are kept as they are."""
    best = {t: sources[0][0] for t, sources in translations(entries).items()}
    return [
        " ".join(_recase(best[_fold(w)], w) if _fold(w) in best else w for w in _WORD.findall(line)) for line in lines
    ]


def pseudo_parallel_counts(
    entries: Sequence[DictionaryEntry], target_text: Sequence[str], source_tokenizer, target_tokenizer
) -> sp.csr_matrix:
    """Link counts of the target text aligned, token by token, with its word-by-word translation; filtered by the
    alignment thresholds, since a dictionary resource is not filtered again by the mapping."""
    shape = (len(target_tokenizer), len(source_tokenizer))
    lines = [line for line in target_text if line.strip()][:MAX_LINES]
    src = encode_many(
        source_tokenizer, translate_word_by_word(lines, entries), None, "tokenizing the word-by-word translation"
    )
    tgt = encode_many(target_tokenizer, lines, None, "tokenizing the target text")
    counts, _, _ = count_links(src, tgt, shape, AlignSettings(), Reporter(None, None, "Aligning"))
    counts = counts.astype(np.float64)
    counts.data[counts.data < MIN_PAIR_COUNT] = 0
    counts.eliminate_zeros()
    totals = np.asarray(counts.sum(axis=1)).ravel()
    counts = sp.csr_matrix(sp.diags((totals >= MIN_TOKEN_COUNT).astype(np.float64)) @ counts)
    counts.eliminate_zeros()
    return counts
