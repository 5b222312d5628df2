"""A bilingual dictionary as the only translation resource: held-out bits per byte at step 0 (and after a short
embedding fine-tune) of SmolLM2-135M adapted to Spanish, for FVT, each dictionary method, the parallel corpus alone
and corpus + dictionary — one tokenizer (16k BPE on the demo training verses), one run.

The dictionary is Debian's FreeDict eng-spa (`dict-freedict-eng-spa`, dictd `.index` + `.dict.dz`), by default from
/usr/share/dictd; without root: `apt-get download dict-freedict-eng-spa && dpkg -x dict-freedict-eng-spa_*.deb DIR`
and pass `--dictionary DIR/usr/share/dictd/freedict-eng-spa.index`. The "target text" of the dictionary methods
is the Spanish side of the training verses (the text the tokenizer is trained on; its English side is not used).
Usage: python benchmarks/dictionary.py [--dictionary FILE] [--max-bytes 30000] [--steps 100] [--json FILE]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from common import ROOT, StageTimer, demo_setup

from core import align, dictionary, finetune, init, mapping, resources
from core.evaluate import bits_per_byte

FREEDICT = Path("/usr/share/dictd/freedict-eng-spa.index")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dictionary", default=str(FREEDICT))
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--out", default=str(ROOT / "demo-output" / "dictionary"))
    p.add_argument("--max-bytes", type=int, default=30_000, help="evaluate on the first N held-out bytes")
    p.add_argument("--steps", type=int, default=100, help="embedding fine-tune steps for the last table (0: skip)")
    p.add_argument("--rows", help="comma-separated row names to run (default: all)")
    p.add_argument("--json", help="also write the results to this JSON file")
    a = p.parse_args()
    out = Path(a.out)
    timed = StageTimer()

    print("Stages:")
    entries = timed("read dictionary", resources.read_dictionary, a.dictionary)
    demo = demo_setup(timed, out, a.vocab_size, a.max_bytes)
    corpus, heldout, model, source_tok, target_tok = (demo.corpus, demo.heldout, demo.model, demo.source_tok,
                                                      demo.target_tok)
    timed("align corpus", align.align_corpus, corpus, source_tok, target_tok, out / "alignment")
    corpus_evidence = mapping.Evidence("corpus", mapping.ALIGNMENT_KIND, align.load_counts(out / "alignment"))
    text = corpus.target

    def dict_evidence(counts, name="dictionary"):
        return mapping.Evidence(name, mapping.DICTIONARY_KIND, counts)

    D = dictionary.DictionarySettings
    built = {}

    def counts(method: str, **kw):
        key = (method, tuple(sorted(kw.items())))
        if key not in built:
            s = D(**kw)
            if method == "entries":
                built[key] = dictionary.entry_counts(entries, source_tok, target_tok)
            elif method == "words":
                built[key] = dictionary.word_counts(entries, source_tok, target_tok, s)
            else:
                built[key] = timed(f"pseudo-parallel {len(built)}", dictionary.pseudo_parallel_counts, entries, text,
                                   source_tok, target_tok, s)
        return built[key]

    def words(**kw):
        return lambda: [mapping.dictionary_evidence(entries, source_tok, target_tok, settings=D(**kw))]

    plain = dict(sense_weights=False, frequency_prior=False)
    variants = {
        "dictionary: every piece × every piece (before)": lambda: [dict_evidence(counts("entries"))],
        "dictionary: whole words, sense × frequency weights": words(),
        "dictionary: whole words, sense weights": words(frequency_prior=False),
        "dictionary: whole words, equal weights": words(**plain),
        "dictionary: whole words, equal, glosses of 1 word": words(**plain, max_source_words=1),
        "dictionary: whole words, equal, top sense": words(**plain, max_sources=1),
        "dictionary: whole words, equal, + spelling ½": words(**plain, spelling_share=0.5),
        "dictionary: whole words, top sense, + spelling ½": words(**plain, max_sources=1, spelling_share=0.5),
        "dictionary: whole words, sense × freq, + spelling ½": words(spelling_share=0.5),
        "dictionary: pseudo-parallel text, aligned": lambda: [dict_evidence(counts("pseudo-parallel"))],
    }
    rows = {"fvt (no resource)": lambda: [], **variants, "corpus only": lambda: [corpus_evidence],
            "corpus + dictionary (before)": lambda: [corpus_evidence, dict_evidence(counts("entries"))]}
    wanted = set(a.rows.split(",")) if a.rows else None
    results, mappings, rows_after = {}, {}, {}
    for name, evidence in rows.items():
        if wanted and not any(w in name for w in wanted):
            continue
        m = mapping.build_mapping(source_tok, target_tok, evidence=evidence())
        adapted = init.initialise(copy.deepcopy(model), m)
        start = time.monotonic()
        r = bits_per_byte(adapted, target_tok, heldout)
        del adapted
        cov = m.coverage()
        results[name] = {"bits_per_byte": r.bits_per_byte, "token_ppl": r.token_ppl,
                         "dictionary_tokens": cov["dictionary"] + cov["alignment+dictionary"],
                         "alignment_tokens": cov["alignment"] + cov["alignment+dictionary"]}
        mappings[name] = m
        print(f"  {name:<50} {r.bits_per_byte:.4f} bits/byte ({time.monotonic() - start:.0f} s)", flush=True)
        if name == "corpus + dictionary (before)":  # the best dictionary-only variant of this run, with the corpus
            measured = [n for n in variants if n in results]
            if measured:
                best = min(measured, key=lambda n: results[n]["bits_per_byte"])
                rows_after[f"corpus + {best}"] = lambda best=best: [corpus_evidence, *variants[best]()]
    for name, evidence in rows_after.items():
        m = mapping.build_mapping(source_tok, target_tok, evidence=evidence())
        r = bits_per_byte(init.initialise(copy.deepcopy(model), m), target_tok, heldout)
        cov = m.coverage()
        results[name] = {"bits_per_byte": r.bits_per_byte, "token_ppl": r.token_ppl,
                         "dictionary_tokens": cov["dictionary"] + cov["alignment+dictionary"],
                         "alignment_tokens": cov["alignment"] + cov["alignment+dictionary"]}
        print(f"  {name:<50} {r.bits_per_byte:.4f} bits/byte", flush=True)

    fvt = results.get("fvt (no resource)", {}).get("bits_per_byte")
    print(f"\nHeld-out Spanish, first {len(heldout.encode()):,} bytes; target vocabulary {len(target_tok):,}; "
          f"{len(entries):,} dictionary entries")
    print(f"{'resource':<58} {'bits/byte':>10} {'vs fvt':>8} {'dict tok':>9} {'align tok':>10}")
    for name, r in results.items():
        vs = f"{100 * (r['bits_per_byte'] / fvt - 1):+.1f}%" if fvt else ""
        print(f"{name:<58} {r['bits_per_byte']:>10.4f} {vs:>8} {r['dictionary_tokens']:>9,} "
              f"{r['alignment_tokens']:>10,}")

    tuned = {}
    if a.steps and fvt:
        best = min((n for n in results if n.startswith("dictionary")), key=lambda n: results[n]["bits_per_byte"])
        heldout_file = out / "heldout.es"
        heldout_file.write_text(heldout, encoding="utf-8")
        train_file = out / "train.es"
        train_file.write_text("\n".join(text) + "\n", encoding="utf-8")
        settings = finetune.FinetuneSettings(steps=a.steps, batch_size=4, block_size=128, eval_every=a.steps,
                                             eval_max_bytes=a.max_bytes, checkpoint_every=a.steps, device="cpu")
        for name in ("fvt (no resource)", best):
            folder = out / ("model-fvt" if name.startswith("fvt") else "model-dictionary")
            init.save_adapted(init.initialise(copy.deepcopy(model), mappings[name]), target_tok, folder)
            result = timed(f"finetune {folder.name}", finetune.finetune, folder, train_file, heldout_file,
                           out / f"{folder.name}-tuned", settings)
            tuned[name] = {"initial_bpb": result.initial_bpb, "final_bpb": result.final_bpb,
                           "seconds": result.seconds}
        print(f"\nAfter {a.steps} embedding steps (4 × 128 tokens, lr 1e-3, CPU):")
        for name, r in tuned.items():
            print(f"{name:<50} {r['initial_bpb']:.4f} → {r['final_bpb']:.4f}  ({r['seconds']:.0f} s)")
    if a.json:
        Path(a.json).write_text(json.dumps({"times": timed.seconds, "heldout_bytes": len(heldout.encode()),
                                            "entries": len(entries), "results": results, "finetuned": tuned},
                                           indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
