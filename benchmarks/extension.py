"""Vocabulary replacement against vocabulary extension on the demo data (SmolLM2-135M, Spanish).

Both are trained on the demo's training books (KJV–RV1909) with default settings: replacement is `tweety adapt`
(a new 16k Spanish vocabulary), extension is `tweety extend` (the source vocabulary plus --new-tokens Spanish tokens,
one run per value given, and per --source-penalty). Each model, and the source model, is then evaluated on the
held-out books in Spanish and in English: tokens per byte and bits per byte at step 0 (no fine-tuning). Prints a
markdown table, the changes against the source model and every stage's wall time; `--json FILE` saves them.
Usage: python benchmarks/extension.py [--new-tokens 8000 ...] [--source-penalty 4 ...] [--out DIR] [--max-bytes N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import DEMO, ROOT, StageTimer

from core import extend, models, pipeline, resources
from core.evaluate import bits_per_byte
from core.models import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new-tokens", type=int, nargs="+", default=[extend.ExtensionSettings.new_tokens])
    p.add_argument("--source-penalty", type=float, nargs="+", default=[extend.ExtensionSettings.source_penalty])
    p.add_argument("--out", default=str(ROOT / "demo-output" / "extension"), help="where the models are written")
    p.add_argument("--max-bytes", type=int, default=0, help="evaluate on the first N bytes of each held-out text")
    p.add_argument("--replacement", help="an existing replaced-vocabulary model folder (skips `adapt`)")
    p.add_argument("--json", help="also write the results to this JSON file")
    a = p.parse_args()
    out = Path(a.out)
    timed = StageTimer()
    train = {lang: str(DEMO / f"bible.train.{lang}.gz") for lang in ("en", "es")}
    heldout = {
        lang: resources.head_bytes(resources.read_text(DEMO / f"bible.heldout.{lang}.gz"), a.max_bytes)
        for lang in ("es", "en")
    }

    print("Stages:")
    source = timed("load source model", load_model, models.DEFAULT_MODEL)
    folders: dict[str, Path] = {}
    stage_seconds: dict[str, dict[str, float]] = {}
    if a.replacement:
        folders["replacement (16k vocabulary)"] = Path(a.replacement)
    else:
        result = timed(
            "replacement (adapt)",
            pipeline.adapt,
            pipeline.AdaptSettings(
                target_text=train["es"],
                parallel=(train["en"], train["es"]),
                out=str(out / "replacement"),
                language="es",
            ),
        )
        folders["replacement (16k vocabulary)"] = result.model
        stage_seconds["replacement"] = result.seconds
        print("    " + ", ".join(f"{k} {v} s" for k, v in result.seconds.items()))
    for n in a.new_tokens:
        for penalty in a.source_penalty:
            name = f"extension (+{n:,} tokens, penalty {penalty:g})"
            result = timed(
                f"extension {n} / {penalty:g}",
                pipeline.adapt,
                pipeline.AdaptSettings(
                    target_text=train["es"],
                    parallel=(train["en"], train["es"]),
                    out=str(out / f"extended-{n}-{penalty:g}"),
                    language="es",
                    vocabulary="extend",
                    extension=extend.ExtensionSettings(new_tokens=n, source_penalty=penalty),
                ),
            )
            folders[name] = result.model
            stage_seconds[name] = result.seconds
            print("    " + ", ".join(f"{k} {v} s" for k, v in result.seconds.items()))

    results = {}
    for name, model_and_tok in [("source model", source), *((n, f) for n, f in folders.items())]:
        model, tok = model_and_tok if name == "source model" else load_model(model_and_tok)
        results[name] = {
            lang: timed(f"eval {lang}: {name[:24]}", bits_per_byte, model, tok, text).__dict__
            for lang, text in heldout.items()
        }
        del model

    base = results["source model"]
    print(
        f"\nHeld-out books (Ruth, Esther, Jonah, Galatians, James, 1 John): Spanish {base['es']['bytes']:,} bytes, "
        f"English {base['en']['bytes']:,} bytes; step 0, no fine-tuning"
    )
    print("| model | es tokens/byte | es bits/byte | en tokens/byte | en bits/byte |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        cells = []
        for lang in ("es", "en"):
            for key in ("tokens_per_byte", "bits_per_byte"):
                value, change = r[lang][key], r[lang][key] / base[lang][key] - 1
                cells.append(f"{value:.3f}" + ("" if name == "source model" else f" ({change:+.1%})"))
        print(f"| {name} | " + " | ".join(cells) + " |")
    if a.json:
        Path(a.json).write_text(
            json.dumps({"times": timed.seconds, "stages": stage_seconds, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
