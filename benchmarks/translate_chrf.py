"""English → Spanish chrF on held-out demo verses: a Hydra against three baselines.

Systems (all greedy, one line in and one line out, the reply cut at its first line break):
- hydra: SmolLM2-135M-Instruct's body, the prompt read with its English tables, the reply written with the adapted
  model's Spanish embeddings and head (core.hydra) — zero-shot translation;
- adapted: the adapted Spanish model alone, asked in its chat template (tokenized by its Spanish tokenizer) to
  translate;
- source: SmolLM2-135M-Instruct alone, asked the same in its own vocabulary;
- dictionary: word by word with Debian's FreeDict eng-spa (/usr/share/dictd): for each English word, of its
  dictionary translations the one most frequent in the Spanish training verses; unknown words (names) kept as is.
chrF is sacrebleu's corpus chrF (character 6-grams, β = 2) against the Reina-Valera 1909 verses.
Usage: python benchmarks/translate_chrf.py [--limit 500] [--adapted DIR] [--systems hydra,adapted,source,dictionary]
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import time
from pathlib import Path

from common import DEMO, ROOT

from core import hydra as H
from core import models, runtime
from core.resources import read_dictionary, read_lines

SYSTEMS = ("hydra", "adapted", "source", "dictionary")
FREEDICT = Path("/usr/share/dictd/freedict-eng-spa.index")


def prompted(model, tokenizer, language: str):
    """A translate function for a model on its own (one-language Hydra), prompted like the Hydra is."""
    single = H.Hydra(model, language, tokenizer)

    def translate(text: str, max_new_tokens: int) -> str:
        messages = runtime.translation_prompt("chat", "en", "es", text)
        ids = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(ids, add_special_tokens=False)["input_ids"]
        settings = H.GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=("\n",))
        return single.generate([H.Segment(language, tuple(ids))], language, settings).text.strip()
    return translate


def dictionary_translator():
    if not FREEDICT.exists():
        raise SystemExit(f"{FREEDICT} is missing: apt-get install dict-freedict-eng-spa, or leave out `dictionary`")
    frequency = collections.Counter(w for line in read_lines(DEMO / "bible.train.es.gz")
                                    for w in re.findall(r"\w+", line.lower()))
    options: dict[str, list[str]] = collections.defaultdict(list)
    for e in read_dictionary(FREEDICT):
        options[e.source.lower()].append(e.target)
    best = {w: max(ts, key=lambda t: (frequency[t.lower()] if " " not in t else 0, -ts.index(t)))
            for w, ts in options.items()}

    def translate(text: str, max_new_tokens: int) -> str:
        return re.sub(r"[A-Za-z]+(?:'[a-z]+)?", lambda m: best.get(m.group(0).lower(), m.group(0)), text)
    return translate


def main() -> None:
    import sacrebleu
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=500, help="first N held-out verses (at most 500)")
    p.add_argument("--adapted", default=str(ROOT / "demo-output" / "model-finetuned"),
                   help="adapted Spanish model folder (its body must be the source model's)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, from " + ", ".join(SYSTEMS))
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--examples", type=int, default=3)
    p.add_argument("--json", help="also write scores and outputs to this JSON file")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    systems = [s for s in a.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    n = min(a.limit, 500)
    english = read_lines(DEMO / "bible.heldout.en.gz")[:n]
    spanish = read_lines(DEMO / "bible.heldout.es.gz")[:n]

    source_model, source_tok = models.load_model(models.DEFAULT_MODEL)
    translators = {}
    if "hydra" in systems:
        hydra = H.build_hydra((source_model, source_tok), {"es": a.adapted})
        translators["hydra"] = lambda text, k: H.translate(hydra, text, "en", "es", max_new_tokens=k)
    if "adapted" in systems:
        translators["adapted"] = prompted(*models.load_model(a.adapted), "es")
    if "source" in systems:
        translators["source"] = prompted(source_model, source_tok, "en")
    if "dictionary" in systems:
        translators["dictionary"] = dictionary_translator()

    outputs, scores, seconds = {}, {}, {}
    for name, translate in translators.items():
        start = time.monotonic()
        outputs[name] = []
        for i, line in enumerate(english):
            outputs[name].append(" ".join(translate(line, a.max_new_tokens).split()))
            if (i + 1) % 10 == 0:
                print(f"  {name}: {i + 1}/{n} ({time.monotonic() - start:.0f} s)", flush=True)
        seconds[name] = time.monotonic() - start
        scores[name] = sacrebleu.corpus_chrf(outputs[name], [spanish]).score

    print(f"\nchrF, English → Spanish, first {n} held-out verses (Ruth…), adapted model: {a.adapted}")
    print(f"{'system':<12} {'chrF':>6} {'s/verse':>8}")
    for name in translators:
        print(f"{name:<12} {scores[name]:6.1f} {seconds[name] / n:8.2f}")
    for i in range(min(a.examples, n)):
        print(f"\n[{i + 1}] en:  {english[i]}\n    ref: {spanish[i]}")
        for name in translators:
            print(f"    {name + ':':<11} {outputs[name][i]}")
    if a.json:
        Path(a.json).write_text(json.dumps({"limit": n, "adapted": a.adapted, "chrf": scores, "seconds": seconds,
                                            "outputs": outputs}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
