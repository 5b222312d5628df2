"""chrF on held-out pairs — the demo's English → Spanish verses, or any line-aligned set (`--pairs`, e.g. the software
strings benchmarks/gettext_pairs.py builds): the baselines a user would otherwise use (copy, a word-by-word
dictionary, the translation memory's closest pair) against the studio's translators.

Systems (the memory: the training pairs, BM25 over the English side, core.memory):
- copy: the English verse as is;
- dictionary: word by word with FreeDict eng-spa, of several translations the one most frequent in the Spanish
  training verses (core.translators.word_by_word);
- memory: the Spanish side of the most similar training pair (BM25 top-1);
- memory + dictionary: near-repeats (≥ 0.6 similar, core.memory.NEAR) from the memory, the dictionary for the rest;
- corpus words: word by word with the lexicon learnt from the training pairs' own word alignment (core.lexicon);
- memory + corpus words: near-repeats from the memory, corpus words for the rest;
- source+memory: SmolLM2-135M-Instruct's GGUF through llama.cpp, prompted with the `--k` closest training pairs
  (core.translation.few_shot_prompt), greedy, one line;
- source+fixed: the same model with three fixed short training pairs instead (the prompt before the memory);
- source+memory+hints: source+memory with dictionary hints in the prompt (the DiPMT / chain-of-dictionary idea, in
  the few-shot form a completion model reads): up to `--hints` words of the line that no example's English has,
  each with its corpus-words translation, as one-word example pairs before the retrieved pairs;
(`--source-gguf gemma`: the model systems run Gemma 3 270M base instead of SmolLM2, when the `gemma` extra is in);
- hydra+memory: a Hydra (SmolLM2's body reading English, `--adapted`'s Spanish head writing), prompted with the
  closest pairs (needs `--adapted`, e.g. a `tweety adapt` project's model/ folder).
The baselines run on `--limit` verses; the models, being slow on a CPU, on the first `--model-limit` of them, and
the table gives every system on that common part too.
Usage: python benchmarks/translate_memory.py [--limit 500] [--model-limit 200] [--k 4] [--threads 1]
       [--systems copy,dictionary,memory,memory+dictionary,corpus-words,memory+corpus-words,source+memory,
       source+fixed,source+memory+hints,hydra+memory] [--adapted DIR] [--source-gguf default|gemma|FILE] [--hints 6]
       [--pairs TRAIN_EN TRAIN_XX HELDOUT_EN HELDOUT_XX --to XX]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import DEMO

from core import models, runtime
from core import translators as T
from core.lexicon import learn
from core.memory import TranslationMemory
from core.resources import read_dictionary, read_lines
from core.translation import common_words

FREEDICT = Path("/usr/share/dictd/freedict-eng-spa.index")
BASELINE_SYSTEMS = ("copy", "dictionary", "memory", "memory+dictionary")
MODEL_SYSTEMS = ("source+memory", "source+fixed", "source+memory+hints", "hydra+memory")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--model-limit", type=int, default=200)
    p.add_argument("--k", type=int, default=4, help="retrieved pairs in a model's prompt")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--systems",
        default="copy,dictionary,memory,memory+dictionary,corpus-words,memory+corpus-words,source+memory,source+fixed",
    )
    p.add_argument(
        "--pairs",
        nargs=4,
        metavar=("TRAIN_EN", "TRAIN_XX", "HELDOUT_EN", "HELDOUT_XX"),
        help="another set (default: the demo's verses)",
    )
    p.add_argument("--to", default="es", help="target language code of --pairs")
    p.add_argument("--dictionary", default=str(FREEDICT))
    p.add_argument("--adapted", help="adapted Spanish model folder for hydra+memory")
    p.add_argument(
        "--source-gguf", default="default", help="the model systems' GGUF: default (SmolLM2), gemma, or a file"
    )
    p.add_argument("--hints", type=int, default=6, help="most dictionary hints a line gets (source+memory+hints)")
    a = p.parse_args()
    systems = a.systems.split(",")
    files = a.pairs or [DEMO / f"bible.{part}.{lang}.gz" for part in ("train", "heldout") for lang in ("en", "es")]
    train_en, train_es, english, spanish = (read_lines(f) for f in files)
    english, spanish = english[: a.limit], spanish[: a.limit]
    start = time.monotonic()
    memory = TranslationMemory(train_en, train_es)
    print(f"memory of {len(memory):,} pairs indexed in {time.monotonic() - start:.1f} s", flush=True)
    made: dict[str, T.Lines] = {"copy": T.copy, "memory": T.memory_top(memory)}
    if {"dictionary", "memory+dictionary"} & set(systems):
        made["dictionary"] = T.word_by_word(read_dictionary(a.dictionary), train_es)
        made["memory+dictionary"] = T.memory_then(memory, made["dictionary"])
    if {"corpus-words", "memory+corpus-words", "source+memory+hints"} & set(systems):
        start = time.monotonic()
        lexicon = learn(train_en, train_es)
        print(f"word lexicon learnt in {time.monotonic() - start:.1f} s", flush=True)
        made["corpus-words"] = lexicon.translate
        made["memory+corpus-words"] = T.memory_then(memory, lexicon.translate)
    if {"source+memory", "source+fixed", "source+memory+hints"} & set(systems):
        gguf_file = {"default": models.default_gguf, "gemma": models.gemma_gguf}.get(
            a.source_gguf, lambda: Path(a.source_gguf)
        )()
        llm = runtime.load(gguf_file, runtime.RuntimeSettings(threads=a.threads))
        gguf = T.gguf_model(llm, "en", a.to)
        made["source+memory"] = T.with_memory(memory, gguf, k=a.k)
        common = common_words(train_en)
        made["source+memory+hints"] = T.with_memory(memory, T.with_hints(gguf, lexicon, common, a.hints), k=a.k)
        from core.hydra import choose_examples

        fixed = choose_examples(train_en, train_es)
        made["source+fixed"] = lambda lines: gguf(lines, [fixed] * len(lines))
    if "hydra+memory" in systems:
        import torch

        from core import hydra

        torch.set_num_threads(a.threads)
        model = hydra.build_hydra(models.load_model(models.DEFAULT_MODEL), {a.to: a.adapted})
        made["hydra+memory"] = T.with_memory(memory, T.hydra_model(model, "en", a.to), k=a.k)
    made = {name: made[name] for name in systems}
    n_models = min(a.model_limit, len(english))
    rows = {}
    for name, translate in made.items():
        n = n_models if name in MODEL_SYSTEMS else len(english)
        start = time.monotonic()
        out = []
        for i in range(0, n, 8):
            out += translate(english[i : i + 8])
        seconds = (time.monotonic() - start) / n
        rows[name] = (T.chrf(out, spanish[:n]), T.chrf(out[:n_models], spanish[:n_models]), seconds, out[:2])
        print(
            f"{name:<16} chrF {rows[name][0]:5.1f} on {n} · {rows[name][1]:5.1f} on the first {n_models} · "
            f"{seconds:.2f} s a verse",
            flush=True,
        )
    print(f"\n| system | chrF, {len(english)} verses | chrF, first {n_models} | s/verse |\n|---|---:|---:|---:|")
    for name, (full, common, seconds, _) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {full if name not in MODEL_SYSTEMS else '–'} | {common} | {seconds:.2f} |")
    for i in range(2):
        print(f"\nen:  {english[i]}\nref: {spanish[i]}")
        for name, row in rows.items():
            print(f"{name}: {row[3][i]}")


if __name__ == "__main__":
    main()
