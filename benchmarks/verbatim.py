"""The verbatim rule (issue 30): a target token the source vocabulary holds as one token, whole, keeps that source
row instead of the alignment's. Step-0 held-out Spanish bits per byte of FVT, today's trans-tokenization and
variants of the rule, for SmolLM2-135M and Gemma 3 270M (the `gemma` extra). The tokenizer and the alignment are
computed once per model (cached under OUT/KEY); each variant only rewrites rows of the mapping.

Variants: `verbatim` every verbatim token keeps its source row; `verbatim<N` only when it has fewer than N alignment
links; `verbatim∉aligned` only when the verbatim source token is not among its aligned sources; `blend W` the row is
W × the verbatim row + (1 − W) × the alignment's; `default` the mapping `tweety adapt` makes now (its spelling
share chosen from the target text, core.mapping.spelling_share_for); `pieces≤K` every aligned token the source spells
in at most K pieces takes its FVT row (K = 1 is `verbatim`; K → ∞ is FVT), the others keep the alignment's;
`pieces≤K<N` the same, only under N alignment links; `pieces≤K mix W` the others W × their FVT row + (1 − W) × the
alignment's.

Usage: python benchmarks/verbatim.py [--models smollm2,gemma] [--vocab 16000] [--train-lines 30423]
                                     [--max-bytes 20000] [--threads 2] [--out demo-output/verbatim]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from common import DEMO, ROOT, StageTimer

from core import align, init, mapping, models, resources, tokenizer
from core.evaluate import bits_per_byte
from core.mapping import Mapping, Origin


def verbatim_tokens(fvt: Mapping, base: Mapping) -> np.ndarray:
    """Per target token: the one source token that spells it whole (FVT row of a single entry), else -1; only
    tokens with letters that the mapping gives alignment evidence, the ones a rule could change."""
    lengths = np.diff(fvt.matrix.indptr)
    single = (lengths == 1) & np.isin(base.origin, [Origin.ALIGNMENT, Origin.ALIGNMENT_AND_DICTIONARY])
    out = np.full(len(lengths), -1, dtype=np.int64)
    out[single] = fvt.matrix.indices[fvt.matrix.indptr[:-1][single]]
    return out


def variant(base: Mapping, fvt: Mapping, verbatim: np.ndarray, use: np.ndarray, blend: float = 1.0) -> Mapping:
    """`base` with the rows of `use` replaced by blend × their verbatim row + (1 − blend) × their own."""
    vt, vs = base.matrix.shape
    rows = np.flatnonzero(use)
    verbatim_rows = sp.csr_matrix((np.ones(len(rows)), (rows, verbatim[rows])), shape=(vt, vs))
    keep = np.ones(vt)
    keep[rows] = 1.0 - blend
    matrix = sp.csr_matrix(sp.diags(keep) @ base.matrix + blend * verbatim_rows, dtype=np.float32)
    return Mapping(matrix, base.origin)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="smollm2,gemma")
    p.add_argument("--vocab", type=int, default=16000)
    p.add_argument("--train-lines", type=int, default=30423)
    p.add_argument("--max-bytes", type=int, default=20_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", default="fvt,transtok,verbatim,verbatim<100,verbatim<500,verbatim∉aligned,blend 0.5")
    p.add_argument("--out", default=str(ROOT / "demo-output" / "verbatim"))
    p.add_argument("--json")
    p.add_argument("--parallel", nargs=2, metavar=("SOURCE", "TARGET"), help="another corpus (default: the demo's)")
    p.add_argument("--target-text", help="the tokenizer's training text (default: the corpus's target side)")
    p.add_argument("--heldout-text", help="held-out target text (default: the demo's)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    specs = {"smollm2": ("SmolLM2-135M", models.DEFAULT_MODEL)}
    gemma = models.gemma_gguf()
    if gemma is not None:
        specs["gemma"] = ("Gemma 3 270M", str(gemma))
    corpus = resources.read_parallel(*(a.parallel or (DEMO / "bible.train.en.gz", DEMO / "bible.train.es.gz")))
    corpus = type(corpus)(corpus.source[: a.train_lines], corpus.target[: a.train_lines])
    tokenizer_text = resources.read_lines(a.target_text) if a.target_text else corpus.target
    heldout = resources.head_bytes(resources.read_text(a.heldout_text or DEMO / "bible.heldout.es.gz"), a.max_bytes)
    results: dict[str, dict[str, float]] = {}
    for key in a.models.split(","):
        if key not in specs:
            print(f"{key}: not installed, skipped")
            continue
        name, spec = specs[key]
        print(f"\n{name}", flush=True)
        timed, work = StageTimer(), out / key
        model, source_tok = timed("load source", models.load_model, spec)
        if not (work / "tokenizer").exists():
            timed(
                "train tokenizer",
                tokenizer.train_tokenizer,
                tokenizer_text,
                source_tok,
                work / "tokenizer",
                tokenizer.TokenizerSettings(vocab_size=a.vocab),
            )
        target_tok = tokenizer.load_tokenizer(work / "tokenizer")
        if not (work / "alignment").exists():
            timed("align", align.align_corpus, corpus, source_tok, target_tok, work / "alignment")
        counts = align.load_counts(work / "alignment")
        # the product's thresholds for the corpus's pair length (long verse pairs: 20 / 5, as before)
        evidence = mapping.Evidence(
            "alignment", mapping.ALIGNMENT_KIND, counts, tokens_per_pair=align.tokens_per_pair(work / "alignment")
        )
        base = timed("map", mapping.build_mapping, source_tok, target_tok, evidence=[evidence])
        fvt = mapping.fvt_mapping(source_tok, target_tok)
        verbatim = verbatim_tokens(fvt, base)
        has = verbatim >= 0
        pieces = np.diff(fvt.matrix.indptr)
        aligned = np.isin(base.origin, [Origin.ALIGNMENT, Origin.ALIGNMENT_AND_DICTIONARY])
        links = np.asarray(counts.sum(axis=1)).ravel()
        aligned_to_it = np.array(
            [
                has[t] and verbatim[t] in base.matrix.indices[base.matrix.indptr[t] : base.matrix.indptr[t + 1]]
                for t in range(len(verbatim))
            ]
        )
        print(
            f"  {int(has.sum())} aligned target tokens with a verbatim source token, "
            f"{int(aligned_to_it.sum())} of them aligned to it",
            flush=True,
        )
        row = results.setdefault(name, {})
        for v in a.variants.split(","):
            if v == "fvt":
                m = fvt
            elif v == "transtok":
                m = base
            elif v == "default":  # what `tweety adapt` does now: the spelling share chosen from the target text
                share = mapping.spelling_share_for(source_tok, "\n".join(tokenizer_text))
                print(f"  default: spelling share {share}", flush=True)
                chosen = mapping.MappingSettings(spelling_share=share)
                m = mapping.build_mapping(source_tok, target_tok, evidence=[evidence], settings=chosen)
            elif v == "verbatim":
                m = variant(base, fvt, verbatim, has)
            elif v.startswith("verbatim<"):
                m = variant(base, fvt, verbatim, has & (links < float(v[len("verbatim<") :])))
            elif v == "verbatim∉aligned":
                m = variant(base, fvt, verbatim, has & ~aligned_to_it)
            elif v.startswith("pieces≤"):
                rule, _, mix = v[len("pieces≤") :].partition(" mix ")
                k, _, n = rule.partition("<")
                use = aligned & (pieces <= int(k)) & (links < (float(n) if n else np.inf))
                w = np.where(use, 1.0, np.where(aligned, float(mix or 0), 0.0))
                m = Mapping(
                    sp.csr_matrix(sp.diags(1 - w) @ base.matrix + sp.diags(w) @ fvt.matrix, dtype=np.float32),
                    base.origin,
                )
            elif v.startswith("blend "):
                m = variant(base, fvt, verbatim, has, float(v.split()[1]))
            else:
                raise SystemExit(f"unknown variant {v!r}")
            adapted = init.initialise(copy.deepcopy(model), m, init.InitSettings(method="transtok"))
            row[v] = timed(f"eval {v}", bits_per_byte, adapted, target_tok, heldout).bits_per_byte
            del adapted
        del model
    variants = a.variants.split(",")
    print(
        f"\nStep-0 bits per byte, held-out text (first {len(heldout.encode()):,} bytes), vocabulary {a.vocab:,}, "
        f"{len(corpus.source):,} pairs:\n"
    )
    print("| source | " + " | ".join(variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[v]:.3f}" for v in variants) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
