"""The torch IBM-2 aligner: as accurate as fast_align on a corpus with known links, exact symmetrization, the
diagonal prior's closed form, determinism and cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.align import AlignSettings, _expected_feature, _log_z, align_corpus, align_ids, symmetrize
from core.jobs import CancelToken, Cancelled, Reporter
from core.resources import ParallelCorpus


def permuted_corpus(pairs: int = 1500, vocab: int = 200, seed: int = 0):
    """Each source word has one target translation; word order is locally shuffled, 5% of source words are dropped
    and 10% of target words are inserted noise. Returns source and target id arrays and the gold links."""
    rng = np.random.default_rng(seed)
    zipf = 1 / np.arange(1, vocab + 1)
    zipf /= zipf.sum()
    translation = rng.permutation(vocab) + 7  # target ids 0-6 are noise words
    source, target, gold = [], [], []
    for _ in range(pairs):
        words = rng.choice(vocab, int(rng.integers(4, 25)), p=zipf)
        order = np.argsort(np.arange(len(words)) + rng.normal(0, 0.8, len(words)), kind="stable")
        out, links = [], set()
        for i in order:
            if rng.random() < 0.05:
                continue
            links.add((int(i), len(out)))
            out.append(translation[words[i]])
            if rng.random() < 0.1:
                out.append(int(rng.integers(0, 7)))
        if out:
            source.append(words.astype(np.int64))
            target.append(np.asarray(out, np.int64))
            gold.append(links)
    return source, target, gold


def quality(links, gold) -> tuple[float, float, float]:
    predicted = links.of_pair()
    correct = sum(len(p & g) for p, g in zip(predicted, gold))
    n_predicted, n_gold = len(links), sum(map(len, gold))
    return correct / n_predicted, correct / n_gold, 1 - 2 * correct / (n_predicted + n_gold)


@pytest.fixture(scope="module")
def corpus():
    return permuted_corpus()


def test_torch_aligner_is_as_accurate_as_fast_align(corpus):
    source, target, gold = corpus
    ours = quality(align_ids(source, target, AlignSettings(method="torch", symmetrize="grow-diag-final-and")), gold)
    theirs = quality(align_ids(source, target, AlignSettings(method="fast_align")), gold)
    assert ours[2] < 0.08 and theirs[2] < 0.08  # both find the translations
    assert abs(ours[2] - theirs[2]) < 0.01, (ours, theirs)  # same model, same AER within noise


def test_intersection_is_the_precise_subset(corpus):
    source, target, gold = corpus
    union = align_ids(source, target, AlignSettings(symmetrize="grow-diag-final-and"))
    inter = align_ids(source, target, AlignSettings(symmetrize="intersection"))
    for small, big in zip(inter.of_pair(), union.of_pair()):
        assert small <= big
    assert quality(inter, gold)[0] > quality(union, gold)[0] > 0.9
    assert quality(inter, gold)[1] < quality(union, gold)[1]


def test_deterministic_on_cpu_and_independent_of_batching(corpus):
    source, target, _ = corpus
    first = align_ids(source, target, AlignSettings(batch_cells=1 << 16))
    again = align_ids(source, target, AlignSettings(batch_cells=1 << 16))
    other = align_ids(source, target, AlignSettings(batch_cells=1 << 20))
    assert first.of_pair() == again.of_pair()
    differing = sum(len(a ^ b) for a, b in zip(first.of_pair(), other.of_pair()))
    assert differing <= 0.001 * len(first)  # only summation order differs between batchings


def _grid(points, shape=(1, 4, 4)):
    g = torch.zeros(shape, dtype=torch.bool)
    for j, i in points:
        g[0, j, i] = True
    return g


def _points(grid) -> set[tuple[int, int]]:
    return {(int(j), int(i)) for _, j, i in grid.nonzero()}


def test_grow_diag_final_and_by_hand():
    # Rows are target positions j, columns source positions i.
    forward = _grid([(0, 0), (1, 1), (2, 1), (3, 3)])
    reverse = _grid([(0, 0), (1, 1), (2, 2), (3, 2)])
    # Intersection (0,0), (1,1). Growing adds union points next to a link whose row or column is empty: (2,1) (row 2
    # empty), then (2,2) (column 2 empty), then (3,2) (row 3 empty), then (3,3) (column 3 still empty).
    expected = {(0, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3)}
    assert _points(symmetrize(forward, reverse, "intersection")) == {(0, 0), (1, 1)}
    assert _points(symmetrize(forward, reverse)) == expected == _sequential_gdfa(_points(forward), _points(reverse))
    # A lone forward link far from everything is added by final-and when its row and column are empty.
    assert (3, 3) in _points(symmetrize(_grid([(0, 0), (3, 3)]), _grid([(0, 0)])))


def _sequential_gdfa(forward: set, reverse: set) -> set:
    """Koehn's grow-diag-final-and, point by point (the reference the batched waves follow)."""
    links = forward & reverse
    union = forward | reverse
    neighbours = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    added = True
    while added:
        added = False
        for j, i in sorted(links):
            for dj, di in neighbours:
                p = (j + dj, i + di)
                if (
                    p in union
                    and p not in links
                    and (all(q[0] != p[0] for q in links) or all(q[1] != p[1] for q in links))
                ):
                    links.add(p)
                    added = True
    for side in (forward, reverse):
        for p in sorted(side):
            if p not in links and all(q[0] != p[0] and q[1] != p[1] for q in links):
                links.add(p)
    return links


def test_batched_symmetrization_agrees_with_the_sequential_algorithm():
    rng = np.random.default_rng(0)
    shape = (200, 12, 12)
    # One forward link per row, one reverse link per column, near the diagonal with noise.
    forward = torch.zeros(shape, dtype=torch.bool)
    reverse = torch.zeros(shape, dtype=torch.bool)
    for b in range(shape[0]):
        for k in range(12):
            forward[b, k, min(11, max(0, k + int(rng.integers(-1, 2))))] = rng.random() < 0.9
            reverse[b, min(11, max(0, k + int(rng.integers(-1, 2)))), k] = rng.random() < 0.9
    batched = symmetrize(forward, reverse)
    same = total = 0
    for b in range(shape[0]):
        ours = _points(batched[b : b + 1])
        reference = _sequential_gdfa(_points(forward[b : b + 1]), _points(reverse[b : b + 1]))
        same += len(ours & reference)
        total += len(ours | reference)
    assert same / total > 0.93


def test_closed_form_prior_matches_the_dense_sum():
    j, m, n = np.meshgrid(np.arange(1, 9), np.arange(8, 9), np.arange(1, 15), indexing="ij")
    j, m, n = (x.ravel().astype(np.float64) for x in (j, m, n))
    for tension in (0.5, 4.0, 13.0):
        dense_z, dense_e = [], []
        for jj, mm, nn in zip(j, m, n):
            h = -np.abs(np.arange(1, nn + 1) / nn - jj / mm)
            w = np.exp(tension * h)
            dense_z.append(np.log(w.sum()))
            dense_e.append((h * w).sum() / w.sum())
        np.testing.assert_allclose(_log_z(np.full(len(j), tension), j, m, n), dense_z, rtol=1e-10)
        weight = np.arange(1, len(j) + 1, dtype=np.float64)
        expected = (np.array(dense_e) * weight).sum() / weight.sum()
        assert _expected_feature(tension, j, m, n, weight) == pytest.approx(expected, abs=1e-7)


def test_cancel_stops_and_writes_nothing(source_tokenizer, target_tokenizer, pairs, tmp_path):
    cancel = CancelToken()
    seen = []

    def progress(p):
        seen.append(p.message)
        if p.message.startswith("EM iteration 2"):
            cancel.cancel()

    with pytest.raises(Cancelled):
        align_corpus(
            ParallelCorpus(*pairs),
            source_tokenizer,
            target_tokenizer,
            tmp_path / "align",
            progress=progress,
            cancel=cancel,
        )
    assert not (tmp_path / "align").exists()
    assert not any(m.startswith("EM iteration 3") for m in seen)


def test_token_alignment_of_real_verses_links_known_words(source_tokenizer, target_tokenizer, pairs, tmp_path):
    from core.align import load_counts

    stats = align_corpus(ParallelCorpus(*pairs), source_tokenizer, target_tokenizer, tmp_path / "align")
    assert (stats.method, stats.symmetrize, stats.pairs) == ("torch", "intersection", 400)
    counts = load_counts(tmp_path / "align")
    for english, spanish in (("God", "Dios"), ("earth", "tierra"), ("waters", "aguas")):
        row = counts[target_tokenizer.convert_tokens_to_ids("▁" + spanish)].toarray().ravel()
        assert row.argmax() == source_tokenizer.convert_tokens_to_ids("Ġ" + english), (english, spanish)


def test_bad_settings_are_refused():
    from core.errors import TweetyError

    with pytest.raises(TweetyError, match="unknown aligner"):
        AlignSettings(method="giza").check()
    with pytest.raises(TweetyError, match="grow-diag-final-and"):
        AlignSettings(method="fast_align", symmetrize="intersection").check()
    report = Reporter(None, None, "x")
    with pytest.raises(TweetyError, match="unknown symmetrization"):
        align_ids([np.arange(3)], [np.arange(3)], AlignSettings(symmetrize="union"), report)
    with pytest.raises(TweetyError, match="sentence pair 2 is empty"):
        align_ids([np.arange(3), np.arange(2)], [np.arange(3), np.arange(0)], AlignSettings(), report)


def test_fast_align_is_an_optional_extra(monkeypatch):
    """Only the fast_align baseline needs systran-align: without it, choosing that aligner says how to install the
    extra, before any work; the default aligner does not need it."""
    import sys

    from core.errors import TweetyError

    monkeypatch.setitem(sys.modules, "systran_align", None)  # as if not installed: importing it fails
    AlignSettings().check()
    with pytest.raises(TweetyError, match=r"tweety-studio\[fast-align\]"):
        AlignSettings(method="fast_align").check()
