"""Why a dictionary does not beat spelling (FVT): two diagnoses on the set-up of `benchmarks/dictionary.py`.

(a) The ceiling: the corpus's alignment evidence given to exactly the target tokens the dictionary covers (every other
    token keeps its spelling row). Far below FVT means the dictionary's translations are the problem, not its coverage.
    And the control: the dictionary's rows dealt out at random among the tokens it covers.
(c) With --map-check, only: would a WECHSEL-style linear map from spelling rows to dictionary rows generalise?
(b) Per-token attribution: the held-out NLL summed per predicted target token under FVT, dictionary and corpus
    initialisations; the tokens with the largest gain or loss against FVT, with the top source tokens of each row.

Reuses the tokenizer and alignment that `benchmarks/dictionary.py` left in --out when they are there.
Usage: python benchmarks/dictionary_diagnose.py --dictionary FILE [--max-bytes 30000] [--top 30] [--threads 1]
       [--settings JSON] [--map-check] [--json FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from common import DEMO, ROOT, StageTimer

from core import align, dictionary, init, mapping, models, resources, tokenizer
from core.evaluate import document_start_id


def token_nll(model, tok, text: str, window: int = 512, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(predicted token id, its NLL in nats) for every position of `text`, windowed exactly as
    `core.evaluate.bits_per_byte` does, so the NLLs sum to its total."""
    import torch

    ids = tok(text, add_special_tokens=False)["input_ids"]
    step = window - 1
    chunks = [[document_start_id(tok)] + ids[i : i + step] for i in range(0, len(ids), step)]
    out = []
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(chunks), batch_size):
            batch = chunks[b : b + batch_size]
            width = max(map(len, batch))
            x = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for k, c in enumerate(batch):
                x[k, : len(c)], mask[k, : len(c)] = torch.tensor(c), 1
            logp = torch.log_softmax(model(input_ids=x, attention_mask=mask).logits.float()[:, :-1], dim=-1)
            nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
            out.extend(nll[k, : len(c) - 1].numpy() for k, c in enumerate(batch))
    return np.asarray(ids), np.concatenate(out)


def top_sources(m: mapping.Mapping, t: int, source_tok, k: int = 3) -> str:
    r = m.matrix[t]
    order = np.argsort(-r.data)[:k]
    return " ".join(f"{source_tok.convert_ids_to_tokens(int(r.indices[j]))}:{r.data[j]:.2f}" for j in order)


def spelling_embeddings(
    model, dict_counts: sp.csr_matrix, fvt: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray, np.ndarray, sp.csr_matrix]:
    """(source input embeddings, spelling embedding of every target token (its FVT row times them), the tokens with
    dictionary rows, those rows as the mapping would use them)."""
    e = model.get_input_embeddings().weight.detach().float().numpy()
    d, f = mapping._normalise_rows(mapping._top_k(dict_counts, 3)), mapping._normalise_rows(fvt)
    return e, np.asarray(f @ e), np.flatnonzero(np.diff(d.indptr) > 0), d


def orthogonal_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(x.T @ y)
    return u @ vt


def nearest(z: np.ndarray, e: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k source tokens nearest (cosine) to each row of z, and the cosines, heaviest first."""
    z, e = z / np.linalg.norm(z, axis=1, keepdims=True), e / np.linalg.norm(e, axis=1, keepdims=True)
    near, cos = [], []
    for b in range(0, len(z), 256):  # blocks: a vocabulary-wide similarity matrix for every row would not fit
        sims = z[b : b + 256] @ e.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1), axis=1)
        near.append(top), cos.append(np.take_along_axis(sims, top, axis=1))
    return np.concatenate(near), np.concatenate(cos)


def map_check(
    model, dict_counts: sp.csr_matrix, fvt: sp.csr_matrix, held_out: float = 0.25, k: int = 3
) -> dict[str, float]:
    """(c) WECHSEL-style generalisation, checked before building it: fit a linear map from each covered token's
    spelling embedding to its dictionary embedding on 75% of the covered tokens; on the rest, how often do the k
    source tokens nearest to the mapped vector include one of the dictionary's source tokens? (Inflected forms of
    one lemma share rows, so with stem matching a held-out form's row is often seen in training.)"""
    e, x, covered, d = spelling_embeddings(model, dict_counts, fvt)
    x, y = x[covered], np.asarray(d[covered] @ e)
    order = np.random.default_rng(0).permutation(len(covered))
    test, train = order[: int(held_out * len(order))], order[int(held_out * len(order)) :]

    def precision(w: np.ndarray) -> float:
        near, _ = nearest(x[test] @ w, e, k)
        return float(np.mean([bool(set(near[i]) & set(d[covered[j]].indices)) for i, j in enumerate(test)]))

    out = {"identity": precision(np.eye(e.shape[1])), "orthogonal": precision(orthogonal_map(x[train], y[train]))}
    for ridge in (1.0, 10.0):
        a = x[train].T @ x[train] + ridge * np.eye(e.shape[1])
        out[f"ridge {ridge:g}"] = precision(np.linalg.solve(a, x[train].T @ y[train] + ridge * np.eye(e.shape[1])))
    return out


def mapped_counts(
    model, dict_counts: sp.csr_matrix, fvt: sp.csr_matrix, targets: np.ndarray, k: int = 3, temperature: float = 0.05
) -> sp.csr_matrix:
    """WECHSEL-style rows for `targets`: the orthogonal map fitted on every covered token, applied to each target's
    spelling embedding; its k nearest source tokens, weighted by a softmax of their cosines."""
    e, x, covered, d = spelling_embeddings(model, dict_counts, fvt)
    near, sims = nearest(x[targets] @ orthogonal_map(x[covered], np.asarray(d[covered] @ e)), e, k)
    w = np.exp((sims - sims[:, :1]) / temperature)
    return sp.csr_matrix((w.ravel(), (np.repeat(targets, k), near.ravel())), shape=dict_counts.shape)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dictionary", required=True)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--out", default=str(ROOT / "demo-output" / "dictionary"))
    p.add_argument("--max-bytes", type=int, default=30_000)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the per-token table to this JSON file")
    p.add_argument("--settings", default="{}", help='DictionarySettings as JSON, e.g. {"stem_match": 4}')
    p.add_argument("--map-check", action="store_true", help="only (c): the WECHSEL-style map's precision")
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    out, timed = Path(a.out), StageTimer()
    entries = timed("read dictionary", resources.read_dictionary, a.dictionary)
    corpus = timed("read corpus", resources.read_parallel, DEMO / "bible.train.en.gz", DEMO / "bible.train.es.gz")
    heldout = resources.head_bytes(resources.read_text(DEMO / "bible.heldout.es.gz"), a.max_bytes)
    model, source_tok = timed("load source model", models.load_model, models.DEFAULT_MODEL)
    if not (out / "tokenizer" / "tokenizer.json").exists():
        timed(
            "train tokenizer",
            tokenizer.train_tokenizer,
            corpus.target,
            source_tok,
            out / "tokenizer",
            tokenizer.TokenizerSettings(vocab_size=a.vocab_size),
        )
    target_tok = tokenizer.load_tokenizer(out / "tokenizer")
    if not (out / "alignment").exists():
        timed("align corpus", align.align_corpus, corpus, source_tok, target_tok, out / "alignment")
    counts = align.load_counts(out / "alignment")
    corpus_ev = mapping.Evidence("corpus", mapping.ALIGNMENT_KIND, counts)
    settings = dictionary.DictionarySettings(**json.loads(a.settings))
    dict_ev = mapping.dictionary_evidence(entries, source_tok, target_tok, settings=settings)
    covered = np.diff(dict_ev.counts.indptr) > 0
    if a.map_check:
        fvt = mapping.fvt_rows(target_tok, source_tok)[0]
        for name, value in map_check(model, dict_ev.counts, fvt).items():
            print(f"  mapped spelling → 3 nearest source tokens hold a translation: {name:<10} {value:.1%}")
        return
    restricted = sp.csr_matrix(sp.diags(covered.astype(np.float64)) @ counts)
    ceiling_ev = mapping.Evidence("corpus", mapping.ALIGNMENT_KIND, restricted)
    # The control: the same rows dealt out at random among the same tokens. What the dictionary gains over this is
    # what its translations are worth; the rest comes from which tokens no longer have their spelling rows.
    ids = np.flatnonzero(covered)
    deal = sp.csr_matrix(
        (np.ones(len(ids)), (ids, np.random.default_rng(0).permutation(ids))), shape=(len(covered),) * 2
    )
    shuffled_ev = mapping.Evidence("dictionary", mapping.DICTIONARY_KIND, sp.csr_matrix(deal @ dict_ev.counts))
    rows = {
        "fvt": [],
        "dictionary": [dict_ev],
        "corpus": [corpus_ev],
        "ceiling": [ceiling_ev],
        "shuffled": [shuffled_ev],
    }
    maps, nll = {}, {}
    n_bytes = len(heldout.encode())
    for name, evidence in rows.items():
        maps[name] = mapping.build_mapping(source_tok, target_tok, evidence=evidence)
        ids, nll[name] = timed(
            f"eval {name}", token_nll, init.initialise(copy.deepcopy(model), maps[name]), target_tok, heldout
        )
        cov = maps[name].coverage()
        print(
            f"  {name:<12} {nll[name].sum() / math.log(2) / n_bytes:.4f} bits/byte  "
            f"(alignment {cov['alignment']:,}, dictionary {cov['dictionary']:,} tokens)",
            flush=True,
        )
    print(
        f"\nDictionary covers {covered.sum():,} target tokens; the corpus aligns "
        f"{(maps['ceiling'].origin == mapping.Origin.ALIGNMENT).sum():,} of them (the ceiling row)."
    )

    vt = len(target_tok)
    per = {name: np.bincount(ids, weights=v, minlength=vt) / math.log(2) / n_bytes for name, v in nll.items()}
    freq = np.bincount(ids, minlength=vt)
    is_dict = np.isin(np.arange(vt), np.flatnonzero(covered))
    for name in ("dictionary", "ceiling", "shuffled"):
        diff = per[name] - per["fvt"]
        print(
            f"\n{name} − fvt: total {diff.sum():+.4f} bits/byte; on predicting dictionary-covered tokens "
            f"{diff[is_dict].sum():+.4f}, on the others {diff[~is_dict].sum():+.4f}"
        )
    diff = per["dictionary"] - per["fvt"]
    table = []
    for label, order in (
        ("worst (dictionary loses)", np.argsort(-diff)[: a.top]),
        ("best (dictionary gains)", np.argsort(diff)[: a.top]),
    ):
        print(f"\n{label}: token, count, Δ bits/byte vs fvt (dictionary | corpus), dictionary row | corpus row")
        for t in order:
            piece = target_tok.convert_ids_to_tokens(int(t))
            row = {
                "token": piece,
                "count": int(freq[t]),
                "dictionary": float(diff[t]),
                "corpus": float(per["corpus"][t] - per["fvt"][t]),
                "covered": bool(is_dict[t]),
                "dictionary_sources": top_sources(maps["dictionary"], int(t), source_tok),
                "corpus_sources": top_sources(maps["corpus"], int(t), source_tok),
            }
            table.append(row)
            print(
                f"  {piece:<14}{'*' if row['covered'] else ' '} {row['count']:>5} {row['dictionary']:+.4f} "
                f"{row['corpus']:+.4f}  {row['dictionary_sources']:<44} | {row['corpus_sources']}"
            )
    if a.json:
        Path(a.json).write_text(json.dumps(table, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
