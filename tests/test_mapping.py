"""Alignment and mapping on small real data: known translations are recovered, bytes map exactly."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest

from core.align import align_corpus, load_counts, tokens_per_pair
from core.errors import TweetyError
from core.dictionary import DictionarySettings
from core.mapping import (
    ALIGNMENT_KIND,
    Evidence,
    Mapping,
    MappingSettings,
    Origin,
    alignment_thresholds,
    build_mapping,
    dictionary_evidence,
)
from core.resources import DictionaryEntry, ParallelCorpus
from core.tokenizer import TokenizerSettings, load_tokenizer, train_tokenizer

# English words that are one SmolLM2 token each (with their leading space) and invented target words.
SOURCE_WORDS = ["house", "king", "water", "bread", "city", "mountain", "river", "sword", "horse", "night"]
TARGET_WORDS = ["zuk", "pelom", "trav", "miso", "quend", "borlat", "fiwa", "gostra", "yelk", "nuvi"]
PERMUTATION = [3, 7, 0, 9, 1, 5, 2, 8, 6, 4]  # source word i translates to target word PERMUTATION[i]


@pytest.fixture(scope="module")
def synthetic(module_tmp, source_tokenizer):
    rng = random.Random(1)
    src, tgt = [], []
    for _ in range(600):
        words = rng.sample(range(10), 5)
        src.append(" ".join(SOURCE_WORDS[i] for i in words))
        target_order = words[:]
        if rng.random() < 0.5:  # word order differs half the time
            rng.shuffle(target_order)
        tgt.append(" ".join(TARGET_WORDS[PERMUTATION[i]] for i in target_order))
    folder = module_tmp("synthetic")
    train_tokenizer(tgt, source_tokenizer, folder / "tok", TokenizerSettings(vocab_size=400))
    target_tok = load_tokenizer(folder / "tok")
    stats = align_corpus(ParallelCorpus(src, tgt), source_tokenizer, target_tok, folder / "align")
    return target_tok, load_counts(folder / "align"), stats


def _single(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, tokenizer.convert_ids_to_tokens(ids))
    return ids[0]


def test_word_i_always_translating_to_word_j_is_recovered(synthetic, source_tokenizer):
    target_tok, counts, stats = synthetic
    assert stats.pairs == 600 and stats.links > 0.8 * stats.target_tokens
    m = build_mapping(source_tokenizer, target_tok, alignment_counts=counts)
    for i, word in enumerate(SOURCE_WORDS):
        t = _single(target_tok, " " + TARGET_WORDS[PERMUTATION[i]])
        row = m.matrix[t].toarray().ravel()
        assert m.origin[t] == Origin.ALIGNMENT
        assert row.argmax() == _single(source_tokenizer, " " + word)
        assert row.max() > 0.8


def test_short_pairs_need_less_alignment_evidence_than_long_ones(synthetic, source_tokenizer, tmp_path):
    """The thresholds follow the corpus's pair length (measured: 2 / 1 on software strings, 20 / 5 on verses): the
    same weak counts (each token pair seen at most 3 times) are evidence in a corpus of 5-word pairs, not in one of
    32-token verses; an explicit setting wins over the pair length."""
    target_tok, counts, stats = synthetic
    (tmp_path / "stats.json").write_text(json.dumps(dataclasses.asdict(stats)))
    assert tokens_per_pair(tmp_path) == tokens_per_pair(tmp_path / "counts") == stats.source_tokens / stats.pairs
    assert tokens_per_pair(tmp_path / "elsewhere" / "counts") == 0.0  # unknown: the long-pair thresholds
    assert alignment_thresholds(stats.source_tokens / stats.pairs) == (2, 1)
    assert alignment_thresholds(32.0) == alignment_thresholds(0.0) == alignment_thresholds(300.0) == (20, 5)
    middle = [alignment_thresholds(n) for n in (8, 12, 16, 24, 32)]
    assert middle == sorted(middle) and middle[0] == (2, 1) and 2 < middle[2][0] < 20  # between, never backwards
    weak = counts.copy()
    weak.data = np.minimum(weak.data, 3)

    def aligned(length: float, settings: MappingSettings = MappingSettings()) -> int:
        m = build_mapping(
            source_tokenizer, target_tok, evidence=[Evidence("c", ALIGNMENT_KIND, weak, 1.0, length)], settings=settings
        )
        return int((m.origin == Origin.ALIGNMENT).sum())

    assert aligned(stats.source_tokens / stats.pairs) >= len(TARGET_WORDS) and aligned(32.0) == 0
    assert aligned(32.0, MappingSettings(min_pair_count=1, min_token_count=2)) == aligned(5.0)
    assert aligned(5.0, MappingSettings(min_pair_count=5)) == 0


def test_weights_sum_to_one_and_save_load(synthetic, source_tokenizer, tmp_path):
    target_tok, counts, _ = synthetic
    m = build_mapping(source_tokenizer, target_tok, alignment_counts=counts)
    sums = np.asarray(m.matrix.sum(axis=1)).ravel()
    has_rows = m.origin != Origin.MEAN
    np.testing.assert_allclose(sums[has_rows], 1.0, atol=1e-5)
    assert (sums[~has_rows] == 0).all()
    assert (m.matrix.data > 0).all()
    m.save(tmp_path / "map", target_tok, source_tokenizer)
    again = Mapping.load(tmp_path / "map")
    assert (again.matrix != m.matrix).nnz == 0 and (again.origin == m.origin).all()
    assert sum(m.coverage().values()) == len(target_tok)


def test_bytes_specials_and_numbers_map_exactly(target_tokenizer, source_tokenizer):
    m = build_mapping(source_tokenizer, target_tokenizer)  # no resources: FVT/identical only
    src = source_tokenizer.get_vocab()

    def sources(piece: str) -> dict[str, float]:
        t = target_tokenizer.convert_tokens_to_ids(piece)
        row = m.matrix[t]
        return {source_tokenizer.convert_ids_to_tokens(int(j)): float(w) for j, w in zip(row.indices, row.data)}

    assert sources("<0x0A>") == {"Ċ": 1.0}  # newline byte → byte-level newline, not "<", "x", "0", "A"
    assert sources("<0xC3>") == {"Ã": 1.0}  # first byte of "é"
    assert sources("<|im_end|>") == {"<|im_end|>": 1.0}
    assert m.origin[target_tokenizer.convert_tokens_to_ids("<|im_end|>")] == Origin.SPECIAL
    assert m.origin[target_tokenizer.convert_tokens_to_ids("<0x31>")] == Origin.IDENTICAL
    assert sources("<0x31>") == {"1": 1.0}
    # a word piece with a leading space maps onto the byte-level tokens of " word"
    word = next(p for p in target_tokenizer.get_vocab() if p.startswith("▁") and len(p) > 4 and p[1:].isalpha())
    expected = source_tokenizer(" " + word[1:], add_special_tokens=False)["input_ids"]
    assert sorted(src[s] for s in sources(word)) == sorted(set(expected))


def test_dictionary_only_spreads_over_source_word_tokens(target_tokenizer, source_tokenizer):
    target = "▁Dios"
    assert target in target_tokenizer.get_vocab()
    entries = [DictionaryEntry("God", "Dios", 1.0), DictionaryEntry("Supreme Being", "Dios", 1.0)]

    def sources(settings: DictionarySettings) -> dict[str, float]:
        m = build_mapping(
            source_tokenizer,
            target_tokenizer,
            evidence=[dictionary_evidence(entries, source_tokenizer, target_tokenizer, settings=settings)],
        )
        t = target_tokenizer.convert_tokens_to_ids(target)
        assert m.origin[t] == Origin.DICTIONARY
        row = m.matrix[t]
        return {source_tokenizer.convert_ids_to_tokens(int(j)): float(w) for j, w in zip(row.indices, row.data)}

    # Two entries of weight 1; " God" is one token, " Supreme Being" two, which share its half evenly (by default a
    # word with a one-token translation keeps only those: `one_token_sources`).
    assert sources(DictionarySettings(one_token_sources=False)) == {
        "ĠGod": pytest.approx(0.5),
        "ĠSupreme": pytest.approx(0.25),
        "ĠBeing": pytest.approx(0.25),
    }
    assert sources(DictionarySettings()) == {"ĠGod": pytest.approx(1.0)}


def test_alignment_counts_for_other_vocabularies_are_refused(synthetic, target_tokenizer, source_tokenizer):
    _, counts, _ = synthetic
    with pytest.raises(TweetyError, match="re-run `tweety align`"):
        build_mapping(source_tokenizer, target_tokenizer, alignment_counts=counts)


def test_a_source_that_reads_the_language_keeps_its_own_spellings(target_tokenizer, source_tokenizer):
    import scipy.sparse as sp

    from core.mapping import fvt_mapping

    src = source_tokenizer.get_vocab()
    whole = _single(target_tokenizer, " de")  # SmolLM2 spells it whole: Ġde
    spelling = fvt_mapping(source_tokenizer, target_tokenizer).matrix
    pieces = np.diff(spelling.indptr)
    split = next(t for t in range(len(target_tokenizer)) if pieces[t] >= 3 and target_tokenizer.decode([t]).isalpha())
    counts = sp.lil_matrix((len(target_tokenizer), len(source_tokenizer)))
    two = next(t for t in range(len(target_tokenizer)) if pieces[t] == 2 and target_tokenizer.decode([t]).isalpha())
    counts[whole, src["Ġof"]] = counts[two, src["Ġof"]] = counts[split, src["Ġthe"]] = 900
    counts = sp.csr_matrix(counts)

    before = build_mapping(source_tokenizer, target_tokenizer, alignment_counts=counts)
    assert before.matrix[whole, src["Ġof"]] == before.matrix[split, src["Ġthe"]] == 1.0
    m = build_mapping(
        source_tokenizer, target_tokenizer, alignment_counts=counts, settings=MappingSettings(spelling_share=0.5)
    )
    assert m.matrix[whole].nnz == 1 and m.matrix[whole, src["Ġde"]] == 1.0 and m.origin[whole] == Origin.FVT
    assert (m.matrix[two] != spelling[two]).nnz == 0 and m.origin[two] == Origin.FVT  # two pieces: its spelling
    # a token of three pieces: half from the alignment, half from its spelling; still counted as aligned
    assert m.matrix[split, src["Ġthe"]] == pytest.approx(0.5 + 0.5 * spelling[split, src["Ġthe"]])
    assert m.matrix[split].sum() == pytest.approx(1.0) and m.matrix[split].nnz == pieces[split] + 1
    assert m.origin[split] == Origin.ALIGNMENT
    untouched = np.flatnonzero(~np.isin(before.origin, [Origin.ALIGNMENT, Origin.ALIGNMENT_AND_DICTIONARY]))
    assert (before.matrix[untouched] != m.matrix[untouched]).nnz == 0


def test_whether_spellings_count_follows_how_compactly_the_source_spells_the_text(source_tokenizer, pairs):
    from core.mapping import SPELLING_SHARE, spelling_share_for

    english, spanish = ("\n".join(side) for side in pairs)
    assert spelling_share_for(source_tokenizer, english) == SPELLING_SHARE  # SmolLM2 reads English: ~0.22 a character
    assert spelling_share_for(source_tokenizer, spanish) == 0  # ~0.40: it does not read Spanish
    assert spelling_share_for(source_tokenizer, "") == 0
