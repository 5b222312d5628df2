"""English → Spanish chrF on held-out demo verses: a Hydra against three baselines.

Systems (all greedy, one line in and one line out, the reply cut at its first line break, never repeating a
4-gram of itself, batched; every model gets the same few-shot prompt: three short training verse pairs, then the
verse — core.hydra.translation_segments):
- hydra: SmolLM2-135M-Instruct's body, the prompt read with its English tables (the example replies with the
  Spanish one), the reply written with the adapted model's Spanish embeddings and head (core.hydra);
- hydra-chat: the same Hydra asked with the chat-template instruction instead of examples (zero-shot);
- hydra-bt: the Hydra after core.hydra.finetune_language on back-translated Spanish training verses (`--tune-lines`
  verses translated into English by the Hydra itself; only the Spanish table and head train, `--tune-steps` steps of
  `--tune-batch` pairs; the Spanish head apart from the Spanish table unless `--tied`);
- hydra-par: the same tuning on real (English, Spanish) training verse pairs;
- adapted: the adapted Spanish model alone (its Spanish tokenizer reads the English too);
- source: SmolLM2-135M-Instruct alone, in its own vocabulary;
- dictionary: word by word with Debian's FreeDict eng-spa (/usr/share/dictd): for each English word, of its
  dictionary translations the one most frequent in the Spanish training verses; unknown words (names) kept as is.
chrF is sacrebleu's corpus chrF (character 6-grams, β = 2) against the Reina-Valera 1909 verses.
With `--source-model gemma` (the `gemma` extra) every system above uses Gemma 3 270M's body instead; `--adapted`
must then be a Gemma adapted to Spanish whose body is untouched (benchmarks/families.py writes one).
Usage: python benchmarks/translate_chrf.py [--limit 500] [--adapted DIR] [--systems hydra,adapted,source,dictionary]
       [--tune-lines 400 --tune-steps 100 --tune-batch 4 --tied] [--source-model default|gemma|FILE]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import random
import re
import time
from pathlib import Path

from common import DEMO, ROOT

from core import hydra as H
from core import models
from core.resources import read_dictionary, read_lines

SYSTEMS = ("hydra", "hydra-chat", "hydra-bt", "hydra-par", "adapted", "source", "dictionary")
FREEDICT = Path("/usr/share/dictd/freedict-eng-spa.index")


def on_its_own(model, tokenizer, examples) -> H.Hydra:
    """A model with its own vocabulary on both sides: a Hydra whose "es" is its "en" (same tokenizer and tables),
    so it gets exactly the Hydra's prompt."""
    single = H.Hydra(model, "en", tokenizer)
    own = single.languages["en"]
    single.languages["es"] = dataclasses.replace(own, code="es", examples=tuple(examples))
    return single


def batched(hydra: H.Hydra, examples=None):
    return lambda texts, k: H.translate_batch(hydra, texts, "en", "es", max_new_tokens=k, examples=examples)


def dictionary_translator(index: Path):
    if not index.exists():
        raise SystemExit(
            f"{index} is missing: apt-get install dict-freedict-eng-spa (or apt-get download it and "
            "dpkg -x, then --dictionary DIR/usr/share/dictd/freedict-eng-spa.index), or leave out "
            "`dictionary`"
        )
    frequency = collections.Counter(
        w for line in read_lines(DEMO / "bible.train.es.gz") for w in re.findall(r"\w+", line.lower())
    )
    options: dict[str, list[str]] = collections.defaultdict(list)
    for e in read_dictionary(index):
        options[e.source.lower()].append(e.target)
    best = {
        w: max(ts, key=lambda t: (frequency[t.lower()] if " " not in t else 0, -ts.index(t)))
        for w, ts in options.items()
    }

    def translate(texts: list[str], max_new_tokens: int) -> list[str]:
        return [
            re.sub(r"[A-Za-z]+(?:'[a-z]+)?", lambda m: best.get(m.group(0).lower(), m.group(0)), text) for text in texts
        ]

    return translate


def main() -> None:
    import sacrebleu
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=500, help="first N held-out verses (at most 500)")
    p.add_argument(
        "--adapted",
        default=str(ROOT / "demo-output" / "model-finetuned"),
        help="adapted Spanish model folder (its body must be the source model's)",
    )
    p.add_argument(
        "--source-model",
        default=models.DEFAULT_MODEL,
        help="the body: default (SmolLM2-135M-Instruct), gemma (Gemma 3 270M), or a GGUF file / folder",
    )
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, from " + ", ".join(SYSTEMS))
    p.add_argument("--dictionary", default=str(FREEDICT), help="FreeDict eng-spa .index for `dictionary`")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--examples", type=int, default=3, help="example outputs to print")
    p.add_argument("--tune-lines", type=int, default=400, help="hydra-bt, hydra-par: training verses (pairs)")
    p.add_argument("--tune-steps", type=int, default=100, help="hydra-bt, hydra-par: tuning steps")
    p.add_argument("--tune-batch", type=int, default=4, help="hydra-bt, hydra-par: pairs per step")
    p.add_argument("--tune-lr", type=float, default=H.HydraTuning.lr)
    p.add_argument(
        "--tied", action="store_true", help="hydra-bt, hydra-par: keep one Spanish table (no head of its own)"
    )
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

    train_en, train_es = read_lines(DEMO / "bible.train.en.gz"), read_lines(DEMO / "bible.train.es.gz")
    examples = H.choose_examples(train_en, train_es)
    spec = models.gemma_gguf() if a.source_model == "gemma" else a.source_model
    if spec is None:
        raise SystemExit("the gemma extra is not installed (make test installs it)")
    source_model, source_tok = models.load_model(spec)
    translators, notes = {}, {}
    if {"hydra", "hydra-chat"} & set(systems):
        hydra = H.build_hydra((source_model, source_tok), {"es": a.adapted}, examples={"es": examples})
        translators["hydra"] = batched(hydra)
        translators["hydra-chat"] = batched(hydra, examples=[])
    tuning = H.HydraTuning(steps=a.tune_steps, batch_size=a.tune_batch, lr=a.tune_lr, untie=not a.tied)
    picks = random.Random(0).sample(range(len(train_es)), min(a.tune_lines, len(train_es)))
    for name in ("hydra-bt", "hydra-par"):
        if name not in systems:
            continue
        tuned = H.build_hydra((source_model, source_tok), {"es": a.adapted}, examples={"es": examples})
        translators[name] = batched(tuned)
        start = time.monotonic()
        if name == "hydra-bt":
            pairs = H.back_translate(tuned, "es", [train_es[i] for i in picks])
            notes["back-translation s"] = time.monotonic() - start
            notes["back-translation example"] = f"{pairs[0][1]}  →  {pairs[0][0]}"
            start = time.monotonic()
        else:
            pairs = [(train_en[i], train_es[i]) for i in picks]
        losses = H.finetune_language(tuned, "es", pairs, tuning)
        notes[f"{name} tuning s"] = time.monotonic() - start
        notes[f"{name} tuning loss first → last 10"] = f"{losses[0]:.3f} → {sum(losses[-10:]) / 10:.3f}"
    if "adapted" in systems:
        translators["adapted"] = batched(on_its_own(*models.load_model(a.adapted), examples))
    if "source" in systems:
        translators["source"] = batched(on_its_own(source_model, source_tok, examples))
    if "dictionary" in systems:
        translators["dictionary"] = dictionary_translator(Path(a.dictionary))

    outputs, scores, seconds = {}, {}, {}
    for name in [s for s in SYSTEMS if s in systems]:
        start = time.monotonic()
        outputs[name] = []
        for i in range(0, n, 32):
            outputs[name] += [" ".join(t.split()) for t in translators[name](english[i : i + 32], a.max_new_tokens)]
            print(f"  {name}: {len(outputs[name])}/{n} ({time.monotonic() - start:.0f} s)", flush=True)
        seconds[name] = time.monotonic() - start
        scores[name] = sacrebleu.corpus_chrf(outputs[name], [spanish]).score

    print(
        f"\nchrF, English → Spanish, first {n} held-out verses (Ruth…), body: {a.source_model}, "
        f"adapted model: {a.adapted}"
    )
    print(f"{'system':<12} {'chrF':>6} {'s/verse':>8}")
    for name in outputs:
        print(f"{name:<12} {scores[name]:6.1f} {seconds[name] / n:8.2f}")
    for key, value in notes.items():
        print(f"{key}: {value if isinstance(value, str) else f'{value:.0f}'}")
    for i in range(min(a.examples, n)):
        print(f"\n[{i + 1}] en:  {english[i]}\n    ref: {spanish[i]}")
        for name in outputs:
            print(f"    {name + ':':<11} {outputs[name][i]}")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "limit": n,
                    "source_model": a.source_model,
                    "adapted": a.adapted,
                    "tuning": dataclasses.asdict(tuning),
                    "tune_lines": a.tune_lines,
                    "chrf": scores,
                    "seconds": seconds,
                    "notes": notes,
                    "outputs": outputs,
                },
                ensure_ascii=False,
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
