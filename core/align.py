"""Token alignment of a parallel corpus: the source side in source-model tokens, the target side in target tokens.

Three aligners, one result. The default, `torch`, is fast_align's model (IBM Model 2 with a diagonal prior whose
tension is learnt, variational Bayes on the lexical tables, a NULL word) trained in both directions at once as batched
tensor operations, on the GPU when there is one; the two directions are symmetrised with grow-diag-final-and (or
intersection). `fast_align` runs the same model from the `systran-align` wheel, `eflomal` the Bayesian HMM+fertility
aligner from the optional `eflomal` package; both are symmetrised here. Every aligner is deterministic on the CPU.

The result kept on disk is the sparse table of link counts `counts[target_token, source_token]`, which is all the
mapping stage needs (and lets the mapping be re-run in seconds without realigning).

Why one module of ~580 lines: the batched EM, its closed-form diagonal prior, the batched symmetrisation and the two
wheel adapters share the batch layout (B×M×N cells of pair indices) and the `Links` record; split apart, each half
would have to re-explain that layout. It reads top to bottom: records, the torch model, symmetrisation, adapters.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_dir, run_in_child
from core.resources import ParallelCorpus
from core.tokenizer import encode_many

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

COUNTS_FILE = "counts.safetensors"
STATS_FILE = "stats.json"
METHODS = ("torch", "fast_align", "eflomal")
SYMMETRIZATIONS = ("auto", "intersection", "grow-diag-final-and")

# fast_align's constants: prior probability of the NULL word, Dirichlet concentration of the lexical tables, starting
# tension of the diagonal prior, and the step size and bounds of its tension updates.
P_NULL = 0.08
ALPHA = 0.01
TENSION = 4.0
TENSION_STEP, TENSION_MIN, TENSION_MAX = 20.0, 0.1, 14.0


@dataclass(frozen=True)
class AlignSettings:
    method: str = "torch"
    # auto: intersection — the most precise links, which initialise best (benchmarks/align.py --downstream) — except
    # for fast_align, whose wheel returns grow-diag-final-and links only.
    symmetrize: str = "auto"
    iterations: int = 5  # EM updates before the final Viterbi pass
    max_tokens: int = 256  # longer sentence pairs are skipped: the aligners' cost and error grow with length
    device: str = "auto"  # torch aligner: "auto" (GPU if there is one), "cpu", "cuda"
    batch_cells: int = 0  # torch aligner: source × target positions per tensor batch; 0 = 512k on CPU, 64M on GPU

    def check(self) -> None:
        if self.method not in METHODS:
            raise TweetyError(f"unknown aligner {self.method!r}", fix=f"choose one of {', '.join(METHODS)}")
        if self.symmetrize not in SYMMETRIZATIONS:
            raise TweetyError(
                f"unknown symmetrization {self.symmetrize!r}", fix=f"choose one of {', '.join(SYMMETRIZATIONS)}"
            )
        if self.method == "fast_align" and self.symmetrization != "grow-diag-final-and":
            raise TweetyError(
                "the fast_align wheel only gives grow-diag-final-and links",
                fix="use the torch or eflomal aligner for intersection links",
            )
        if self.method == "fast_align":
            _systran_align()  # before any work: a baseline that needs an optional package
        if self.iterations < 1 or self.max_tokens < 1:
            raise TweetyError("iterations and max_tokens must be at least 1")

    @property
    def symmetrization(self) -> str:
        if self.symmetrize != "auto":
            return self.symmetrize
        return "grow-diag-final-and" if self.method == "fast_align" else "intersection"


@dataclass(frozen=True)
class AlignmentStats:
    pairs: int
    pairs_skipped: int
    source_tokens: int
    target_tokens: int
    links: int
    distinct_pairs: int
    target_types_linked: int
    target_vocab: int
    seconds: float
    method: str = "fast_align"
    symmetrize: str = "grow-diag-final-and"


@dataclass(frozen=True)
class Links:
    """Links of a whole corpus, one entry per link: sentence pair number and 0-based source and target positions."""

    pair: np.ndarray
    source: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.pair)

    def of_pair(self) -> list[set[tuple[int, int]]]:
        """Per sentence pair, the set of (source position, target position) links (for evaluation)."""
        n = int(self.pair.max()) + 1 if len(self.pair) else 0
        out: list[set[tuple[int, int]]] = [set() for _ in range(n)]
        for p, s, t in zip(self.pair.tolist(), self.source.tolist(), self.target.tolist()):
            out[p].add((s, t))
        return out


def align_corpus(
    corpus: ParallelCorpus,
    source_tokenizer,
    target_tokenizer,
    out_dir: str | Path,
    settings: AlignSettings = AlignSettings(),
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> AlignmentStats:
    """Align `corpus` token by token and save link counts and statistics in `out_dir`."""
    settings.check()
    start = time.monotonic()
    report = Reporter(progress, cancel, "Aligning")
    src_ids = encode_many(source_tokenizer, corpus.source, report, "tokenizing the source side")
    tgt_ids = encode_many(target_tokenizer, corpus.target, report, "tokenizing the target side")
    vt, vs = len(target_tokenizer), len(source_tokenizer)
    counts, keep, links = count_links(src_ids, tgt_ids, (vt, vs), settings, report)
    if not keep:
        raise TweetyError(
            f"no sentence pair is between 1 and {settings.max_tokens} tokens long",
            fix="split long paragraphs into sentences, one per line",
        )
    src_flat = sum(len(src_ids[i]) for i in keep)
    tgt_flat = sum(len(tgt_ids[i]) for i in keep)
    stats = AlignmentStats(
        pairs=len(keep),
        pairs_skipped=len(corpus) - len(keep),
        source_tokens=src_flat,
        target_tokens=tgt_flat,
        links=len(links.pair),
        distinct_pairs=counts.nnz,
        target_types_linked=int((np.diff(counts.indptr) > 0).sum()),
        target_vocab=vt,
        seconds=round(time.monotonic() - start, 2),
        method=settings.method,
        symmetrize=settings.symmetrization,
    )
    with atomic_dir(out_dir) as tmp:
        save_counts(tmp / COUNTS_FILE, counts)
        (tmp / STATS_FILE).write_text(json.dumps(asdict(stats), indent=2))
    report(1, 1, f"{stats.links:,} links")
    return stats


def count_links(
    src_ids: Sequence[Sequence[int]],
    tgt_ids: Sequence[Sequence[int]],
    shape: tuple[int, int],
    settings: AlignSettings,
    report: Reporter,
) -> tuple[sp.csr_matrix, list[int], Links | None]:
    """Align token-id sequences (pairs empty on a side or over `settings.max_tokens` skipped) and count how often
    each (target token, source token) pair is linked: counts[target, source]. Returns (counts, the indices of the
    pairs aligned, their links); nothing aligned: empty counts, [], None."""
    keep = [
        i
        for i, (s, t) in enumerate(zip(src_ids, tgt_ids))
        if 0 < len(s) <= settings.max_tokens and 0 < len(t) <= settings.max_tokens
    ]
    if not keep:
        return sp.csr_matrix(shape, dtype=np.float32), keep, None
    src = [np.asarray(src_ids[i], np.int64) for i in keep]
    tgt = [np.asarray(tgt_ids[i], np.int64) for i in keep]
    links = align_ids(src, tgt, settings, report)
    # Positions → token ids: one flat array per side, indexed by each pair's offset.
    src_flat, tgt_flat = np.concatenate(src), np.concatenate(tgt)
    src_start = np.cumsum([0] + [len(s) for s in src])[:-1]
    tgt_start = np.cumsum([0] + [len(t) for t in tgt])[:-1]
    r = tgt_flat[tgt_start[links.pair] + links.target]
    c = src_flat[src_start[links.pair] + links.source]
    counts = sp.coo_matrix((np.ones(len(r), np.float32), (r, c)), shape=shape).tocsr()
    counts.sum_duplicates()
    return counts, keep, links


def align_ids(
    source: Sequence[np.ndarray],
    target: Sequence[np.ndarray],
    settings: AlignSettings = AlignSettings(),
    report: Reporter | None = None,
) -> Links:
    """Word-align sentence pairs given as arrays of integer ids (tokens or words), with `settings.method`."""
    settings.check()
    if len(source) != len(target) or not len(source):
        raise TweetyError(
            f"{len(source):,} source but {len(target):,} target sentences",
            fix="give the same number of sentences, at least one, on both sides",
        )
    empty = next((k for k, (s, t) in enumerate(zip(source, target)) if len(s) == 0 or len(t) == 0), None)
    if empty is not None:
        raise TweetyError(f"sentence pair {empty + 1:,} is empty on one side", fix="drop empty pairs before aligning")
    report = report or Reporter(None, None, "Aligning")
    if settings.method == "torch":
        return _align_torch(source, target, settings, report)
    if settings.method == "fast_align":
        return _align_fast_align(source, target, settings, report)
    return _align_eflomal(source, target, settings, report)


# ---------------------------------------------------------------------------------------------------------------------
# The torch aligner. Sentence pairs of similar lengths are padded into B×M×N batches (M target, N source positions);
# every cell holds the index of its (source token, target token) pair in the lexical tables, so one E-step is a
# gather, a few element-wise operations and one scatter-add per direction — for both directions over the same cells:
# the forward model (target word from source words) normalises over N, the reverse model over M.


@dataclass
class _Batch:
    rows: np.ndarray  # corpus pair numbers of the B sentences
    src: "torch.Tensor"  # B×N source ids, padded with 0
    tgt: "torch.Tensor"  # B×M target ids, padded with 0
    n: "torch.Tensor"  # B source lengths
    m: "torch.Tensor"  # B target lengths
    cell: "torch.Tensor | None" = None  # B×M×N int32 index into the lexical tables; padding → the last slot

    def masks(self):
        """Which target words (B×M), source words (B×N) and cells (B×M×N) are real rather than padding."""
        import torch

        j = torch.arange(1, self.tgt.shape[1] + 1, device=self.tgt.device)
        i = torch.arange(1, self.src.shape[1] + 1, device=self.tgt.device)
        target_real = j[None, :] <= self.m[:, None]
        source_real = i[None, :] <= self.n[:, None]
        return target_real, source_real, target_real[:, :, None] & source_real[:, None, :]

    def geometry(self):
        """Diagonal feature −|i/n − j/m| of every cell (1-based positions), then the three masks."""
        import torch

        j = torch.arange(1, self.tgt.shape[1] + 1, device=self.tgt.device, dtype=torch.float32)
        i = torch.arange(1, self.src.shape[1] + 1, device=self.tgt.device, dtype=torch.float32)
        feature = -(i[None, None, :] / self.n[:, None, None] - j[None, :, None] / self.m[:, None, None]).abs()
        return (feature, *self.masks())


def _layout(source: Sequence[np.ndarray], target: Sequence[np.ndarray], budget: int, device) -> list[_Batch]:
    """Pairs sorted by (target, source) length and cut into padded batches of at most `budget` cells."""
    import torch

    ns = np.array([len(s) for s in source])
    ms = np.array([len(t) for t in target])
    order = np.lexsort((ns, ms))
    batches, start = [], 0
    while start < len(order):
        end, n_max = start, 0
        while end < len(order):
            n_next = max(n_max, ns[order[end]])
            if end > start and (end - start + 1) * ms[order[end]] * n_next > budget:
                break
            n_max, end = n_next, end + 1
        rows = order[start:end]
        m_max = ms[rows].max()
        src = np.zeros((len(rows), n_max), np.int64)
        tgt = np.zeros((len(rows), m_max), np.int64)
        for k, r in enumerate(rows):
            src[k, : ns[r]] = source[r]
            tgt[k, : ms[r]] = target[r]
        batches.append(
            _Batch(
                rows,
                torch.from_numpy(src).to(device),
                torch.from_numpy(tgt).to(device),
                torch.from_numpy(ns[rows]).to(device),
                torch.from_numpy(ms[rows]).to(device),
            )
        )
        start = end
    return batches


def _index_cells(batches: list[_Batch], target_vocab: int):
    """Give every co-occurring (source, target) token pair a slot; returns the pairs' source and target ids."""
    import torch

    reals = [b.masks()[2] for b in batches]
    keys = [(b.src[:, None, :] * target_vocab + b.tgt[:, :, None])[real] for b, real in zip(batches, reals)]
    unique, inverse = torch.unique(torch.cat(keys), return_inverse=True)
    pad = len(unique)
    offset = 0
    for b, k, real in zip(batches, keys, reals):
        cell = torch.full(real.shape, pad, dtype=torch.int32, device=real.device)
        cell[real] = inverse[offset : offset + len(k)].to(torch.int32)
        b.cell = cell
        offset += len(k)
    return unique // target_vocab, unique % target_vocab


@dataclass(eq=False)  # identity-hashed: used as a dict key
class _Direction:
    """One direction of the IBM-2 model: `axis` is the dimension of the conditioning words (−1: source positions,
    the forward model; −2: target positions, the reverse model)."""

    axis: int
    group: "torch.Tensor"  # per table slot, the conditioning word: the lexical table is normalised within it
    vocab: int  # size of the predicted side's vocabulary (NULL word's table)
    tension: float = TENSION
    table: "torch.Tensor | None" = None  # t(predicted | conditioning) per slot (+ a 0 for padding); None = uniform
    null: "torch.Tensor | None" = None  # t(predicted | NULL)
    counts: "torch.Tensor | None" = None
    null_counts: "torch.Tensor | None" = None
    feature_sum: float = 0.0

    def predicted(self, b: _Batch):
        return b.tgt if self.axis == -1 else b.src

    def scores(self, b: _Batch, feature, real):
        """Unnormalised posteriors of every cell and of the NULL word: lexical × diagonal prior."""
        import torch

        prior = torch.mul(feature, self.tension).exp_().mul_(real)
        prior.div_(prior.sum(self.axis, keepdim=True).clamp_min_(1e-30))
        score = prior.mul_(1 - P_NULL) if self.table is None else prior.mul_(self.table[b.cell]).mul_(1 - P_NULL)
        words = self.predicted(b)
        null = torch.full(words.shape, P_NULL, device=words.device) if self.null is None else P_NULL * self.null[words]
        return score, null

    def expect(self, b: _Batch, feature, real, words_real) -> float:
        """E-step: add this batch's expected link counts; returns its log-likelihood."""
        import torch

        score, null = self.scores(b, feature, real)
        total = score.sum(self.axis).add_(null).clamp_min_(1e-30)
        posterior = score.div_(total.unsqueeze(self.axis))
        self.counts.index_add_(0, b.cell.flatten(), posterior.flatten())
        self.null_counts.index_add_(0, self.predicted(b).flatten(), null.div_(total).mul_(words_real).flatten())
        self.feature_sum += float(torch.dot(posterior.flatten(), feature.flatten()))
        return float(torch.log(total)[words_real].sum())

    def viterbi(self, b: _Batch, feature, real, words_real):
        """The best link of every predicted word (none where the NULL word wins), as a B×M×N boolean grid."""
        import torch

        score, null = self.scores(b, feature, real)
        best = score.max(self.axis)
        linked = (best.values > null) & words_real
        grid = torch.zeros(real.shape, dtype=torch.bool, device=real.device)
        return grid.scatter_(self.axis, best.indices.unsqueeze(self.axis), linked.unsqueeze(self.axis))

    def start_counts(self) -> None:
        import torch

        device = self.group.device
        self.counts = torch.zeros(len(self.group) + 1, device=device)
        self.null_counts = torch.zeros(self.vocab, device=device)
        self.feature_sum = 0.0

    def maximise(self, present) -> None:
        """Variational-Bayes M-step (fast_align's `-v`): t = exp(ψ(c + α) − ψ(Σ(c + α)))."""
        import torch

        c = self.counts[:-1] + ALPHA
        total = torch.zeros(int(self.group.max()) + 1, device=c.device).index_add_(0, self.group, c)
        table = torch.exp(torch.digamma(c) - torch.digamma(total[self.group]))
        self.table = torch.cat([table, table.new_zeros(1)])
        c0 = self.null_counts + ALPHA
        self.null = torch.exp(torch.digamma(c0) - torch.digamma((c0 * present).sum()))


def _log_z(tension: np.ndarray, j: np.ndarray, m: np.ndarray, n: np.ndarray) -> np.ndarray:
    """log Σ_i exp(tension · −|i/n − j/m|) over i = 1..n, in closed form: two geometric series either side of the
    diagonal (positions at or below j·n/m, and above)."""
    below = (j * n) // m  # positions i with i/n ≤ j/m
    ratio = np.exp(-tension / n)
    series = lambda count: (1 - ratio**count) / (1 - ratio)  # noqa: E731
    top = np.exp(tension * (j / m - (below + 1) / n)) * series(n - below)
    bottom = np.exp(tension * (below / n - j / m)) * series(below)
    return np.log(top + bottom)


def _expected_feature(tension: float, j: np.ndarray, m: np.ndarray, n: np.ndarray, weight: np.ndarray) -> float:
    """Mean over predicted words of the prior's expected diagonal feature: d log Z / d tension."""
    eps = 1e-4
    t = np.full(len(j), tension)
    d = (_log_z(t + eps, j, m, n) - _log_z(t - eps, j, m, n)) / (2 * eps)
    return float((d * weight).sum() / weight.sum())


def _positions(own: np.ndarray, other: np.ndarray):
    """Every (position, own length, other length) triple of the corpus, with its count."""
    sizes, count = np.unique(np.stack([own, other], 1), axis=0, return_counts=True)
    lengths = sizes[:, 0]
    j = np.concatenate([np.arange(1, k + 1) for k in lengths])
    repeat = lambda x: np.repeat(x, lengths)  # noqa: E731
    return (
        j.astype(np.float64),
        repeat(lengths).astype(np.float64),
        repeat(sizes[:, 1]).astype(np.float64),
        repeat(count).astype(np.float64),
    )


def _align_torch(source, target, settings: AlignSettings, report: Reporter) -> Links:
    import torch

    device = torch.device(
        "cuda"
        if settings.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if settings.device == "auto"
        else settings.device
    )
    budget = settings.batch_cells or (64 << 20 if device.type == "cuda" else 1 << 19)
    report(0, None, "preparing batches")
    batches = _layout(source, target, budget, device)
    source_vocab = int(max(int(s.max()) for s in source)) + 1
    target_vocab = int(max(int(t.max()) for t in target)) + 1
    src_of_slot, tgt_of_slot = _index_cells(batches, target_vocab)
    ns = np.array([len(s) for s in source])
    ms = np.array([len(t) for t in target])
    forward = _Direction(-1, src_of_slot, target_vocab)
    reverse = _Direction(-2, tgt_of_slot, source_vocab)
    present = {forward: torch.zeros(target_vocab, device=device), reverse: torch.zeros(source_vocab, device=device)}
    for b in batches:
        present[forward][b.tgt.flatten()] = 1
        present[reverse][b.src.flatten()] = 1
    triples = {forward: _positions(ms, ns), reverse: _positions(ns, ms)}
    words = {forward: ms.sum(), reverse: ns.sum()}

    steps, step = (settings.iterations + 1) * len(batches), 0
    for iteration in range(settings.iterations):
        for d in (forward, reverse):
            d.start_counts()
        log_likelihood = 0.0
        for b in batches:
            report(step, steps, f"EM iteration {iteration + 1} of {settings.iterations}")
            step += 1
            feature, target_real, source_real, real = b.geometry()
            log_likelihood += forward.expect(b, feature, real, target_real)
            log_likelihood += reverse.expect(b, feature, real, source_real)
        for d in (forward, reverse):
            if iteration > 0:  # as fast_align: the first iteration only sets up the lexical tables
                _fit_tension(d, d.feature_sum / words[d], *triples[d])
            d.maximise(present[d])
        log.info(
            "iteration %d: log-likelihood %.1f, tensions %.2f %.2f",
            iteration + 1,
            log_likelihood,
            forward.tension,
            reverse.tension,
        )

    pairs, src_pos, tgt_pos = [], [], []
    for b in batches:
        report(step, steps, "linking words")
        step += 1
        feature, target_real, source_real, real = b.geometry()
        links = symmetrize(
            forward.viterbi(b, feature, real, target_real),
            reverse.viterbi(b, feature, real, source_real),
            settings.symmetrization,
        )
        k, j, i = links.nonzero(as_tuple=True)
        pairs.append(b.rows[k.cpu().numpy()])
        tgt_pos.append(j.cpu().numpy())
        src_pos.append(i.cpu().numpy())
    return Links(np.concatenate(pairs), np.concatenate(src_pos), np.concatenate(tgt_pos))


def _fit_tension(d: _Direction, empirical: float, j, m, n, weight) -> None:
    """fast_align's tension update: eight gradient steps matching the prior's expected feature to the posterior's."""
    for _ in range(8):
        model = _expected_feature(d.tension, j, m, n, weight)
        d.tension = min(max(d.tension + (empirical - model) * TENSION_STEP, TENSION_MIN), TENSION_MAX)


def symmetrize(forward, reverse, how: str = "grow-diag-final-and"):
    """Combine forward and reverse links (B×M×N boolean grids) into one set.

    grow-diag-final-and (Koehn et al., as in Moses and fast_align's atools), in waves over the whole batch: start from
    the intersection; grow into union points next to a link (8-neighbourhood) whose row or column is still empty;
    then add the remaining forward, then reverse, points whose row and column are both empty. The sequential
    algorithm re-checks emptiness after every single addition, so its result depends on scan order; growing a wave
    at a time adds what any order could add (on noisy random grids ~95% of links agree, the rest are extra), and
    final-and takes one point per row and column per wave, because there two additions can exclude each other."""
    import torch

    links = forward & reverse
    if how == "intersection":
        return links
    union = forward | reverse
    todo = torch.arange(len(links), device=links.device)  # sentences that may still grow
    while len(todo):
        grown = links[todo]
        candidates = (
            union[todo] & ~grown & _neighbours(grown) & (~grown.any(2, keepdim=True) | ~grown.any(1, keepdim=True))
        )
        growing = candidates.flatten(1).any(1)
        todo = todo[growing]
        links[todo] = grown[growing] | candidates[growing]
    for side in (forward, reverse):
        while True:
            candidates = side & ~links & ~links.any(2, keepdim=True) & ~links.any(1, keepdim=True)
            if not candidates.any():
                break
            links = links | _first(_first(candidates, 2), 1)
    return links


def _first(candidates, dim: int):
    """The first True of every line along `dim` (argmax returns the first maximum)."""
    import torch

    return torch.zeros_like(candidates).scatter_(
        dim, candidates.to(torch.uint8).argmax(dim, keepdim=True), candidates.any(dim, keepdim=True)
    )


def _neighbours(links):
    """Cells with an aligned cell among their eight neighbours (or aligned themselves)."""
    rows = links.clone()
    rows[:, 1:] |= links[:, :-1]
    rows[:, :-1] |= links[:, 1:]
    out = rows.clone()
    out[:, :, 1:] |= rows[:, :, :-1]
    out[:, :, :-1] |= rows[:, :, 1:]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The PyPI aligners run native code in a child process, so that cancel really stops them.


def _in_child(report: Reporter, target: Callable, args: tuple, message: str, name: str) -> None:
    code = run_in_child(report, target, args, message)
    if code != 0:
        raise RuntimeError(f"{name} failed (exit code {code})")


def _words(sentences: Sequence[np.ndarray]) -> list[list[str]]:
    return [[str(x) for x in s.tolist()] for s in sentences]


FAST_ALIGN_EXTRA = "pip install 'tweety-studio[fast-align]'"


def _systran_align():
    """The systran-align wheel: only the fast_align baseline needs it, so it is an optional extra (`fast-align`)."""
    try:
        import systran_align
    except ImportError:
        raise TweetyError(
            "the fast_align aligner is not installed (it is optional: the default aligner, torch, runs "
            "the same model faster)",
            fix=f"install it with {FAST_ALIGN_EXTRA} (or pip install systran-align), or use the default aligner",
        ) from None
    return systran_align


def _align_fast_align(source, target, settings: AlignSettings, report: Reporter) -> Links:
    systran_align = _systran_align()
    src_words, tgt_words = _words(source), _words(target)
    with tempfile.TemporaryDirectory(prefix="tweety-align-") as work:
        with open(f"{work}/corpus.txt", "w", encoding="utf-8") as f:
            for s, t in zip(src_words, tgt_words):
                f.write(f"{' '.join(s)} ||| {' '.join(t)}\n")
        _in_child(
            report,
            _train_fast_align,
            (work, settings.iterations),
            f"training IBM models on {len(source):,} pairs (both directions)",
            "fast_align training",
        )
        aligner = systran_align.Aligner(f"{work}/forward", f"{work}/backward")
        pairs, src_pos, tgt_pos = [], [], []
        batch = 2000
        for b in range(0, len(source), batch):
            report(b, len(source), "aligning sentence pairs")
            for k, result in enumerate(aligner.align_batch(src_words[b : b + batch], tgt_words[b : b + batch])):
                for s, t in result["alignments"]:
                    pairs.append(b + k)
                    src_pos.append(s)
                    tgt_pos.append(t)
    return Links(np.asarray(pairs, np.int64), np.asarray(src_pos, np.int64), np.asarray(tgt_pos, np.int64))


def _train_fast_align(work: str, iterations: int) -> None:
    """Runs in a child process. One OpenMP thread: fast_align's parallel E-step adds counts in whatever order the
    threads finish, so with several threads two runs on the same corpus give (slightly) different tables; with one,
    the same input always gives the same mapping."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import systran_align

    systran_align.generate_alignment_probabilities(
        f"{work}/corpus.txt",
        f"{work}/forward",
        f"{work}/backward",
        iterations=iterations,
        favor_diagonal=True,
        optimize_tension=True,
        variational_bayes=True,
    )


def _align_eflomal(source, target, settings: AlignSettings, report: Reporter) -> Links:
    import torch

    try:
        import eflomal  # noqa: F401
    except ImportError:
        raise TweetyError(
            "the eflomal aligner is not installed",
            fix="`pip install eflomal` (it compiles in about 20 s), or use the torch aligner",
        ) from None
    with tempfile.TemporaryDirectory(prefix="tweety-eflomal-") as work:
        _in_child(
            report,
            _run_eflomal,
            (work, _words(source), _words(target)),
            f"sampling eflomal alignments of {len(source):,} pairs",
            "eflomal",
        )
        forward = _read_pharaoh(f"{work}/forward")
        reverse = _read_pharaoh(f"{work}/reverse")
    pairs, src_pos, tgt_pos = [], [], []
    for b in _layout(source, target, 4 << 20, "cpu"):
        grids = []
        for links in (forward, reverse):
            grid = torch.zeros(b.tgt.shape[0], b.tgt.shape[1], b.src.shape[1], dtype=torch.bool)
            for k, r in enumerate(b.rows):
                for s, t in links[r]:
                    grid[k, t, s] = True
            grids.append(grid)
        k, j, i = symmetrize(*grids, settings.symmetrization).nonzero(as_tuple=True)
        pairs.append(b.rows[k.numpy()])
        tgt_pos.append(j.numpy())
        src_pos.append(i.numpy())
    return Links(np.concatenate(pairs), np.concatenate(src_pos), np.concatenate(tgt_pos))


def _run_eflomal(work: str, source: list[list[str]], target: list[list[str]]) -> None:
    """Runs in a child process. One sampler per core, as eflomal's own default of three would oversubscribe."""
    import eflomal

    aligner = eflomal.Aligner(n_samplers=max(1, min(3, os.cpu_count() or 1)))
    aligner.align(
        [" ".join(s) + "\n" for s in source],
        [" ".join(t) + "\n" for t in target],
        links_filename_fwd=f"{work}/forward",
        links_filename_rev=f"{work}/reverse",
    )


def _read_pharaoh(path: str) -> list[list[tuple[int, int]]]:
    with open(path, encoding="utf-8") as f:
        return [[tuple(int(x) for x in link.split("-")) for link in line.split()] for line in f]


def save_counts(path: Path, matrix: sp.csr_matrix) -> None:
    from safetensors.numpy import save_file

    save_file(
        {
            "indptr": matrix.indptr.astype(np.int64),
            "indices": matrix.indices.astype(np.int64),
            "data": matrix.data.astype(np.float32),
            "shape": np.asarray(matrix.shape, np.int64),
        },
        str(path),
    )


def tokens_per_pair(path: str | Path) -> float:
    """The mean source tokens a pair of the corpus aligned into `path` (its stats), 0.0 where they are not there."""
    path = Path(path)
    try:
        stats = json.loads(((path if path.is_dir() else path.parent) / STATS_FILE).read_text(encoding="utf-8"))
        return stats["source_tokens"] / stats["pairs"] if stats["pairs"] else 0.0
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def load_counts(path: str | Path) -> sp.csr_matrix:
    from safetensors.numpy import load_file

    path = Path(path)
    if path.is_dir():
        path = path / COUNTS_FILE
    if not path.exists():
        raise TweetyError("no alignment counts here", path=path, fix="run `tweety align` first")
    t = load_file(str(path))
    return sp.csr_matrix((t["data"], t["indices"], t["indptr"]), shape=tuple(int(x) for x in t["shape"]))
