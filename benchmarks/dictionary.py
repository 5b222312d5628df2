"""A bilingual dictionary as the only translation resource: held-out bits per byte at step 0 (and after a short
embedding fine-tune) of SmolLM2-135M adapted to Spanish, for FVT, each dictionary method, the parallel corpus alone
and corpus + dictionary — one tokenizer (16k BPE on the demo training verses), one run.

The dictionary is Debian's FreeDict eng-spa (`dict-freedict-eng-spa`, dictd `.index` + `.dict.dz`), by default from
/usr/share/dictd; without root: `apt-get download dict-freedict-eng-spa && dpkg -x dict-freedict-eng-spa_*.deb DIR`
and pass `--dictionary DIR/usr/share/dictd/freedict-eng-spa.index`. The "target text" of the dictionary methods
is the Spanish side of the training verses (the text the tokenizer is trained on; its English side is not used).
Another language (no parallel corpus, so no corpus rows): `--language CODE --target-text FILE --heldout-text FILE`
trains the tokenizer on the target text and measures on the held-out text (e.g. Russian or Finnish software strings
and manuals from benchmarks/gettext_pairs.py, with dict-freedict-eng-rus / eng-fin); the "for the language" rows use
`DictionarySettings.for_language(CODE)`.
Usage: python benchmarks/dictionary.py [--dictionary FILE] [--max-bytes 30000] [--skip-bytes 0] [--steps 100]
       [--rows 'NAME PART|…'] [--threads 1] [--reuse-alignment] [--json FILE]
       [--language CODE --target-text FILE --heldout-text FILE]
Why the dictionary rows come out as they do: benchmarks/dictionary_diagnose.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from common import ROOT, Demo, StageTimer, demo_setup
from dictionary_diagnose import mapped_counts
from dictionary_methods import entry_counts, pseudo_parallel_counts

from core import align, dictionary, finetune, init, mapping, models, resources, tokenizer
from core.evaluate import bits_per_byte

FREEDICT = Path("/usr/share/dictd/freedict-eng-spa.index")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dictionary", default=str(FREEDICT))
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--out", default=str(ROOT / "demo-output" / "dictionary"))
    p.add_argument("--max-bytes", type=int, default=30_000, help="evaluate on the first N held-out bytes")
    p.add_argument("--skip-bytes", type=int, default=0, help="evaluate on the held-out bytes after the first N")
    p.add_argument("--steps", type=int, default=100, help="embedding fine-tune steps for the last table (0: skip)")
    p.add_argument(
        "--rows",
        help="parts of the names of the rows to run, separated by | (or by commas where no name has one; default: all)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--reuse-alignment",
        action="store_true",
        help="use the alignment an earlier run left in --out (the tokenizer training is deterministic)",
    )
    p.add_argument("--language", default="es", help="target language code, for the 'for the language' rows")
    p.add_argument("--target-text", help="another language's text to train the tokenizer on (instead of the demo)")
    p.add_argument("--heldout-text", help="with --target-text: the held-out text measured")
    p.add_argument("--plural-endings", help="comma-separated plural endings to measure for the language, e.g. k")
    a = p.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    out = Path(a.out)
    timed = StageTimer()

    print("Stages:")
    entries = timed("read dictionary", resources.read_dictionary, a.dictionary)
    if a.target_text:
        demo = other_language(timed, out, a.vocab_size, a.max_bytes + a.skip_bytes, a.target_text, a.heldout_text)
    else:
        demo = demo_setup(timed, out, a.vocab_size, a.max_bytes + a.skip_bytes)
    if a.skip_bytes:  # a second held-out sample, for checking choices made on the first
        demo.heldout = demo.heldout.encode()[a.skip_bytes :].decode("utf-8", errors="ignore")
    corpus, heldout, model, source_tok, target_tok = (
        demo.corpus,
        demo.heldout,
        demo.model,
        demo.source_tok,
        demo.target_tok,
    )
    text = corpus.target
    aligned: list[mapping.Evidence] = []

    def corpus_evidence() -> mapping.Evidence:
        """The parallel corpus's alignment evidence, aligned (or reused) when a row first needs it."""
        if not aligned:
            if not (a.reuse_alignment and (out / "alignment").exists()):
                timed("align corpus", align.align_corpus, corpus, source_tok, target_tok, out / "alignment")
            aligned.append(mapping.Evidence("corpus", mapping.ALIGNMENT_KIND, align.load_counts(out / "alignment")))
        return aligned[0]

    def dict_evidence(counts, name="dictionary"):
        return mapping.Evidence(name, mapping.DICTIONARY_KIND, counts)

    D = dictionary.DictionarySettings
    built = {}

    def counts(method: str):
        if method not in built:
            built[method] = (
                entry_counts(entries, source_tok, target_tok)
                if method == "entries"
                else timed("pseudo-parallel", pseudo_parallel_counts, entries, text, source_tok, target_tok)
            )
        return built[method]

    def words(base: dict | None = None, **kw):
        return lambda: [mapping.dictionary_evidence(entries, source_tok, target_tok, settings=D(**(base or {}) | kw))]

    def for_language(**kw):
        return lambda: [
            mapping.dictionary_evidence(entries, source_tok, target_tok, settings=D.for_language(a.language, **kw))
        ]

    # Every row names all the settings it changes from these, so that it keeps measuring the same thing whatever the
    # defaults: `exact` is whole words as of 2026-11-28 (dictionary words only), `stems` adds inflected forms.
    # Rows of knobs measured worse and removed on 2026-12-03 (sense and frequency weights, top sense, + spelling,
    # own ending, closest / nearest lemmas, prefix shares, the dictionary word's ending) are no longer here: the code
    # of commit e1aecff reproduces them (docs/results/dictionary.md).
    exact = dict(
        stem_match=0,
        max_ending=3,
        one_token_sources=False,
        spelling_kept_from=0,
        plural_endings=(),
        wider_pool=0,
        fallback_ending=0,
        cognates=0.0,
    )
    stems = dict(exact, stem_match=4, one_token_sources=True)
    kept = dict(stems, stem_match=3, plural_endings=("s",), spelling_kept_from=1)
    language = D.for_language(a.language)
    plurals = tuple(e for e in (a.plural_endings or "").split(",") if e)
    stemmer = dictionary.STEMMERS.get(a.language.replace("_", "-").split("-")[0].casefold(), "")
    variants = {
        "dictionary: every piece × every piece (before)": lambda: [dict_evidence(counts("entries"))],
        "dictionary: whole words, equal weights": words(exact),
        "dictionary: whole words, equal, glosses of 1 word": words(exact, max_source_words=1),
        "dictionary: stems ≥ 4": words(exact, stem_match=4),
        "dictionary: stems ≥ 5": words(exact, stem_match=5),
        "dictionary: stems ≥ 3": words(exact, stem_match=3),
        "dictionary: stems ≥ 4, one-token glosses": words(stems),
        "dictionary: stems ≥ 4, one-token glosses, shared spelling kept if ≥ 3 senses": words(
            stems, spelling_kept_from=3
        ),
        "dictionary: stems ≥ 4, one-token glosses, shared spelling kept if ≥ 2 senses": words(
            stems, spelling_kept_from=2
        ),
        "dictionary: stems ≥ 4, one-token glosses, shared spelling always kept": words(stems, spelling_kept_from=1),
        "dictionary: stems ≥ 4, one-token glosses, kept if ≥ 2, plurals": words(
            stems, spelling_kept_from=2, plural_endings=("s",)
        ),
        "dictionary: stems ≥ 4 endings ≤ 4, one-token glosses, kept if ≥ 2": words(
            stems, max_ending=4, spelling_kept_from=2
        ),
        "dictionary: stems ≥ 4 endings ≤ 4, one-token glosses, plurals, kept": words(kept, stem_match=4, max_ending=4),
        "dictionary: stems ≥ 4 endings ≤ 5, one-token glosses, plurals, kept": words(kept, stem_match=4, max_ending=5),
        "dictionary: stems ≥ 2 endings ≤ 4, one-token glosses, plurals, kept": words(kept, stem_match=2, max_ending=4),
        **{
            f"dictionary: stems ≥ 3 endings ≤ {n}, one-token glosses, plurals, kept": words(kept, max_ending=n)
            for n in (4, 5, 8, 10)
        },
        "dictionary: stems ≥ 3 endings ≤ 5, one-token glosses, kept (no plurals)": words(
            kept, max_ending=5, plural_endings=()
        ),
        "dictionary: stems ≥ 3 endings ≤ 6, one-token glosses, plurals, kept (the default until 2026-11-29)": words(
            kept, max_ending=6
        ),
        "dictionary: the default (stems ≥ 3 endings ≤ 6, then ≤ 8 if none, one-token glosses, plurals, kept, lemmas "
        "of a prefix 1 shorter too, cognates ≥ 0.85)": words(),
        "dictionary: stems ≥ 3 endings ≤ 6, one-token glosses, plurals, kept, but glosses of several tokens too": words(
            kept, max_ending=6, one_token_sources=False
        ),
        **{
            f"dictionary: stems ≥ 3 endings ≤ 6, one-token glosses, plurals, kept, lemmas of a prefix {n} shorter "
            "too": words(kept, max_ending=6, wider_pool=n)
            for n in (1, 2, 3)
        },
        "dictionary: stems ≥ 3 endings ≤ 6, then ≤ 8 if none, one-token glosses, plurals, kept, lemmas of a prefix 1 "
        "shorter too": words(kept, max_ending=6, fallback_ending=8, wider_pool=1),
        **{
            f"dictionary: stems ≥ 3 endings ≤ 6, then ≤ {n} if none, one-token glosses, plurals, kept": words(
                kept, max_ending=6, fallback_ending=n
            )
            for n in (8, 12)
        },
        **{
            f"dictionary: stems ≥ 3 endings ≤ 6, then ≤ 8 if none, one-token glosses, plurals, kept, lemmas of a "
            f"prefix 1 shorter too, cognates ≥ {x:g}": words(
                kept, max_ending=6, fallback_ending=8, wider_pool=1, cognates=x
            )
            for x in (0.7, 0.75, 0.8, 0.85, 0.9)
        },
        # The language rules (2026-12-03): the settings `for_language` gives (plural endings, stemmer, accent folding,
        # cognates), and each rule switched the other way.
        f"dictionary: for the language {a.language} (DictionarySettings.for_language)": for_language(),
        **(
            {f"dictionary: for the language {a.language}, no plural rule": for_language(plural_endings=())}
            if language.plural_endings
            else {}
        ),
        **(
            {
                f"dictionary: for the language {a.language}, plural endings {','.join(plurals)}": for_language(
                    plural_endings=plurals
                )
            }
            if plurals and plurals != language.plural_endings
            else {}
        ),
        f"dictionary: for the language {a.language}, "
        + ("no cognates" if language.cognates else "cognates ≥ 0.85"): for_language(
            cognates=0.0 if language.cognates else 0.85
        ),
        **(
            {
                f"dictionary: for the language {a.language}, without the {language.stemmer} stemmer": for_language(
                    stemmer=""
                ),
                f"dictionary: for the language {a.language}, the {language.stemmer} stemmer without the prefix "
                "rule": for_language(stem_match=0),
            }
            if language.stemmer
            else {}
        ),
        **(
            {
                f"dictionary: for the language {a.language}, with the {stemmer} stemmer": for_language(stemmer=stemmer),
                f"dictionary: for the language {a.language}, the {stemmer} stemmer without the prefix "
                "rule": for_language(stemmer=stemmer, stem_match=0),
            }
            if stemmer and not language.stemmer
            else {}
        ),
        # What the default's spelling part is worth without a single translation: a dictionary of one entry that no
        # target word is, so only cognates (and accent-free spellings, `á` → ` a`) give rows — on, even for a language
        # whose defaults leave them off.
        "spelling only: the default's cognates, no translations": lambda: [
            mapping.dictionary_evidence(
                [resources.DictionaryEntry("zzzz", "zzzz")],
                source_tok,
                target_tok,
                settings=D.for_language(a.language, cognates=D.cognates),
            )
        ],
        "dictionary: pseudo-parallel text, aligned": lambda: [dict_evidence(counts("pseudo-parallel"))],
        "dictionary: stems ≥ 3 endings ≤ 6, then ≤ 8 if none, one-token glosses, plurals, kept, lemmas of a prefix 1 "
        "shorter too + a WECHSEL-style map for the other whole words": lambda: with_map(),
    }

    def with_map() -> list[mapping.Evidence]:
        """The default, and for every whole word it leaves on its spelling row (the source lacks it as one token),
        the source tokens nearest to that row mapped the way the dictionary's words map (`mapped_counts`)."""
        default = words(kept, max_ending=6, fallback_ending=8, wider_pool=1)()[0]
        fvt = mapping.fvt_rows(target_tok, source_tok)[0]
        others = np.array(
            [t for t in dictionary.whole_words(target_tok) if default.counts[t].nnz == 0 and fvt[t].nnz > 1]
        )
        return [default, dict_evidence(mapped_counts(model, default.counts, fvt, others), "dictionary map")]

    rows = {"fvt (no resource)": lambda: [], **variants}
    if corpus.source:  # the demo's parallel corpus; another language's text has none
        rows |= {
            "corpus only": lambda: [corpus_evidence()],
            "corpus + dictionary (before)": lambda: [corpus_evidence(), dict_evidence(counts("entries"))],
        }
    wanted = set(a.rows.split("|" if "|" in a.rows else ",")) if a.rows else None
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
        results[name] = {
            "bits_per_byte": r.bits_per_byte,
            "token_ppl": r.token_ppl,
            "dictionary_tokens": cov["dictionary"] + cov["alignment+dictionary"],
            "alignment_tokens": cov["alignment"] + cov["alignment+dictionary"],
        }
        mappings[name] = m
        print(f"  {name:<50} {r.bits_per_byte:.4f} bits/byte ({time.monotonic() - start:.0f} s)", flush=True)
        if name == "corpus + dictionary (before)":  # the best dictionary-only variant of this run, with the corpus
            measured = [n for n in variants if n in results]
            if measured:
                best = min(measured, key=lambda n: results[n]["bits_per_byte"])
                rows_after[f"corpus + {best}"] = lambda best=best: [corpus_evidence(), *variants[best]()]
    for name, evidence in rows_after.items():
        m = mapping.build_mapping(source_tok, target_tok, evidence=evidence())
        r = bits_per_byte(init.initialise(copy.deepcopy(model), m), target_tok, heldout)
        cov = m.coverage()
        results[name] = {
            "bits_per_byte": r.bits_per_byte,
            "token_ppl": r.token_ppl,
            "dictionary_tokens": cov["dictionary"] + cov["alignment+dictionary"],
            "alignment_tokens": cov["alignment"] + cov["alignment+dictionary"],
        }
        print(f"  {name:<50} {r.bits_per_byte:.4f} bits/byte", flush=True)

    fvt = results.get("fvt (no resource)", {}).get("bits_per_byte")
    sample = (
        f"bytes {a.skip_bytes:,}–{a.skip_bytes + len(heldout.encode()):,}"
        if a.skip_bytes
        else f"first {len(heldout.encode()):,} bytes"
    )
    print(
        f"\nHeld-out {a.language}, {sample}; target vocabulary {len(target_tok):,}; {len(entries):,} dictionary entries"
    )
    print(f"{'resource':<58} {'bits/byte':>10} {'vs fvt':>8} {'dict tok':>9} {'align tok':>10}")
    for name, r in results.items():
        vs = f"{100 * (r['bits_per_byte'] / fvt - 1):+.1f}%" if fvt else ""
        print(
            f"{name:<58} {r['bits_per_byte']:>10.4f} {vs:>8} {r['dictionary_tokens']:>9,} {r['alignment_tokens']:>10,}"
        )

    tuned = {}
    if a.steps and fvt:
        best = min((n for n in results if n.startswith("dictionary")), key=lambda n: results[n]["bits_per_byte"])
        heldout_file = out / "heldout.es"
        heldout_file.write_text(heldout, encoding="utf-8")
        train_file = out / "train.es"
        train_file.write_text("\n".join(text) + "\n", encoding="utf-8")
        settings = finetune.FinetuneSettings(
            steps=a.steps,
            batch_size=4,
            block_size=128,
            eval_every=a.steps,
            eval_max_bytes=a.max_bytes,
            checkpoint_every=a.steps,
            device="cpu",
        )
        for name in ("fvt (no resource)", best):
            folder = out / ("model-fvt" if name.startswith("fvt") else "model-dictionary")
            init.save_adapted(init.initialise(copy.deepcopy(model), mappings[name]), target_tok, folder)
            result = timed(
                f"finetune {folder.name}",
                finetune.finetune,
                folder,
                train_file,
                heldout_file,
                out / f"{folder.name}-tuned",
                settings,
            )
            tuned[name] = {"initial_bpb": result.initial_bpb, "final_bpb": result.final_bpb, "seconds": result.seconds}
        print(f"\nAfter {a.steps} embedding steps (4 × 128 tokens, lr 1e-3, CPU):")
        for name, r in tuned.items():
            print(f"{name:<50} {r['initial_bpb']:.4f} → {r['final_bpb']:.4f}  ({r['seconds']:.0f} s)")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "times": timed.seconds,
                    "heldout_bytes": len(heldout.encode()),
                    "entries": len(entries),
                    "results": results,
                    "finetuned": tuned,
                },
                indent=2,
                ensure_ascii=False,
            )
        )


def other_language(
    timed: StageTimer, out: Path, vocab_size: int, max_bytes: int, target_text: str, heldout_text: str | None
) -> Demo:
    """The demo set-up for another language: its text (the target side of a `corpus` without a source side) trains
    the tokenizer, the first `max_bytes` of its held-out text are measured."""
    if not heldout_text:
        raise SystemExit("--target-text needs --heldout-text")
    lines = [line for line in resources.read_lines(target_text) if line.strip()]
    heldout = resources.head_bytes(resources.read_text(heldout_text), max_bytes)
    model, source_tok = timed("load source model", models.load_model, models.DEFAULT_MODEL)
    timed(
        "train tokenizer",
        tokenizer.train_tokenizer,
        lines,
        source_tok,
        out / "tokenizer",
        tokenizer.TokenizerSettings(vocab_size=vocab_size),
    )
    corpus = resources.ParallelCorpus(source=[], target=lines)
    return Demo(corpus, heldout, model, source_tok, tokenizer.load_tokenizer(out / "tokenizer"))


if __name__ == "__main__":
    main()
