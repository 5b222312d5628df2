"""Token alignment of a parallel corpus: the source side in source-model tokens, the target side in target tokens.

Uses fast_align's model (IBM Model 2 with a diagonal prior, `-d -o -v`) from the `systran-align` wheel: no external
binary, both directions, symmetrised with grow-diag-final-and, deterministic (same input, same counts). The result kept on disk is the sparse table of link
counts `counts[target_token, source_token]`, which is all the mapping stage needs (and lets the mapping be re-run in
seconds without realigning).
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.errors import TweetyError
from core.jobs import CancelToken, ProgressFn, Reporter, atomic_dir
from core.resources import ParallelCorpus
from core.tokenizer import encode_many

log = logging.getLogger(__name__)

COUNTS_FILE = "counts.safetensors"
STATS_FILE = "stats.json"


@dataclass(frozen=True)
class AlignSettings:
    iterations: int = 5
    max_tokens: int = 256  # longer sentence pairs are skipped: fast_align's cost and error grow with length
    batch_size: int = 2000


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


def align_corpus(corpus: ParallelCorpus, source_tokenizer, target_tokenizer, out_dir: str | Path,
                 settings: AlignSettings = AlignSettings(), *, progress: ProgressFn | None = None,
                 cancel: CancelToken | None = None) -> AlignmentStats:
    """Align `corpus` token by token and save link counts and statistics in `out_dir`."""
    import systran_align

    start = time.monotonic()
    report = Reporter(progress, cancel, "Aligning")
    src_ids = encode_many(source_tokenizer, corpus.source, report, "tokenizing the source side")
    tgt_ids = encode_many(target_tokenizer, corpus.target, report, "tokenizing the target side")
    keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids))
            if 0 < len(s) <= settings.max_tokens and 0 < len(t) <= settings.max_tokens]
    if not keep:
        raise TweetyError(f"no sentence pair is between 1 and {settings.max_tokens} tokens long",
                          fix="split long paragraphs into sentences, one per line")
    src_words = [[str(x) for x in src_ids[i]] for i in keep]
    tgt_words = [[str(x) for x in tgt_ids[i]] for i in keep]

    with tempfile.TemporaryDirectory(prefix="tweety-align-") as work:
        work = Path(work)
        with open(work / "corpus.txt", "w", encoding="utf-8") as f:
            for s, t in zip(src_words, tgt_words):
                f.write(f"{' '.join(s)} ||| {' '.join(t)}\n")
        # A child process, so that cancel really stops it (native code cannot be interrupted in a thread).
        worker = multiprocessing.get_context("spawn").Process(
            target=_train_models, args=(str(work), settings.iterations), daemon=True)
        worker.start()
        try:
            report.wait(worker, f"training IBM models on {len(keep):,} pairs (both directions)")
        finally:
            if worker.is_alive():
                worker.kill()
        if worker.exitcode != 0:
            raise RuntimeError(f"fast_align training failed (exit code {worker.exitcode})")
        aligner = systran_align.Aligner(str(work / "forward"), str(work / "backward"))
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        for b in range(0, len(keep), settings.batch_size):
            report(b, len(keep), "aligning sentence pairs")
            batch = aligner.align_batch(src_words[b:b + settings.batch_size], tgt_words[b:b + settings.batch_size])
            for k, result in enumerate(batch):
                links = result["alignments"]
                if not links:
                    continue
                s_pos, t_pos = np.asarray(links, dtype=np.int64).T
                i = keep[b + k]
                rows.append(np.asarray(tgt_ids[i])[t_pos])
                cols.append(np.asarray(src_ids[i])[s_pos])
    vt, vs = len(target_tokenizer), len(source_tokenizer)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    counts = sp.coo_matrix((np.ones(len(r), np.float32), (r, c)), shape=(vt, vs)).tocsr()
    counts.sum_duplicates()
    stats = AlignmentStats(
        pairs=len(keep), pairs_skipped=len(corpus) - len(keep), source_tokens=sum(map(len, src_words)),
        target_tokens=sum(map(len, tgt_words)), links=len(r), distinct_pairs=counts.nnz,
        target_types_linked=int((np.diff(counts.indptr) > 0).sum()), target_vocab=vt,
        seconds=round(time.monotonic() - start, 2))
    with atomic_dir(out_dir) as tmp:
        save_counts(tmp / COUNTS_FILE, counts)
        (tmp / STATS_FILE).write_text(json.dumps(asdict(stats), indent=2))
    report(len(keep), len(keep), f"{stats.links:,} links")
    return stats


def _train_models(work: str, iterations: int) -> None:
    """Runs in a child process. One OpenMP thread: fast_align's parallel E-step adds counts in whatever order the
    threads finish, so with several threads two runs on the same corpus give (slightly) different tables; with one,
    the same input always gives the same mapping."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import systran_align

    systran_align.generate_alignment_probabilities(
        f"{work}/corpus.txt", f"{work}/forward", f"{work}/backward", iterations=iterations, favor_diagonal=True,
        optimize_tension=True, variational_bayes=True)


def save_counts(path: Path, matrix: sp.csr_matrix) -> None:
    from safetensors.numpy import save_file

    save_file({"indptr": matrix.indptr.astype(np.int64), "indices": matrix.indices.astype(np.int64),
               "data": matrix.data.astype(np.float32), "shape": np.asarray(matrix.shape, np.int64)}, str(path))


def load_counts(path: str | Path) -> sp.csr_matrix:
    from safetensors.numpy import load_file

    path = Path(path)
    if path.is_dir():
        path = path / COUNTS_FILE
    if not path.exists():
        raise TweetyError("no alignment counts here", path=path, fix="run `tweety align` first")
    t = load_file(str(path))
    return sp.csr_matrix((t["data"], t["indices"], t["indptr"]), shape=tuple(int(x) for x in t["shape"]))
