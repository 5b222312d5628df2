"""Held-out bits per byte of SmolLM2-135M adapted to Spanish, for each initialisation (the `make bench` table), and
FVT and trans-tokenization with the frequency calibration (core.calibrate).

Runs every stage once on the embedded demo corpus (KJV–RV1909 Bible, train books), then initialises the model with
each method and evaluates it on the held-out books. Prints a table and the stage times; `--json FILE` saves them.
Usage: python benchmarks/init_quality.py [--vocab-size 16000] [--out DIR] [--max-bytes N]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from common import ROOT, StageTimer, demo_setup

from core import align, calibrate, init, mapping
from core.evaluate import bits_per_byte


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--out", default=str(ROOT / "demo-output"), help="where the adapted models are written")
    p.add_argument("--max-bytes", type=int, default=0, help="evaluate on the first N bytes of held-out text only")
    p.add_argument("--json", help="also write the results to this JSON file")
    a = p.parse_args()
    out = Path(a.out)
    timed = StageTimer()

    print("Stages:")
    demo = demo_setup(timed, out, a.vocab_size, a.max_bytes)
    corpus, heldout, model, source_tok, target_tok = (
        demo.corpus,
        demo.heldout,
        demo.model,
        demo.source_tok,
        demo.target_tok,
    )
    stats = timed("align", align.align_corpus, corpus, source_tok, target_tok, out / "alignment")
    counts = align.load_counts(out / "alignment")
    m = timed("map", mapping.build_mapping, source_tok, target_tok, alignment_counts=counts)
    m.save(out / "mapping", target_tok, source_tok)

    rows = [("source model, own tokenizer", timed("eval source", bits_per_byte, model, source_tok, heldout))]
    text = "\n".join(corpus.target)
    # Each method as published, then the two that matter with the frequency calibration every project gets for
    # trans-tokenization (core.calibrate; FVT's calibrated row says how much of the gain is the calibration's).
    for method, share in (("random", 0), ("mean", 0), ("fvt", 0), ("transtok", 0), ("fvt", 1), ("transtok", 1)):
        method_mapping = init.mapping_for_method(method, m, source_tok, target_tok)
        name = method + (" + calibration" if share else "")
        adapted = timed(
            f"init {name}", init.initialise, copy.deepcopy(model), method_mapping, init.InitSettings(method=method)
        )
        if share:
            timed(f"calibrate {method}", calibrate.calibrate, adapted, target_tok, text, calibrate.SHARE)
        if (method, share) == ("transtok", 1):  # what `tweety adapt` writes: `make bench` fine-tunes it
            init.save_adapted(adapted, target_tok, out / "model-transtok")
        rows.append((name, timed(f"eval {name}", bits_per_byte, adapted, target_tok, heldout)))
        del adapted

    print(
        f"\nHeld-out Spanish ({rows[0][1].bytes:,} bytes, books Ruth, Esther, Jonah, Galatians, James, 1 John); "
        f"target vocabulary {len(target_tok):,}; {stats.pairs:,} verse pairs aligned"
    )
    print(f"{'model':<34} {'bits/byte':>10} {'token ppl':>12} {'tokens/byte':>12}")
    for name, r in rows:
        print(f"{name:<34} {r.bits_per_byte:>10.4f} {r.token_ppl:>12.1f} {r.tokens_per_byte:>12.4f}")
    print("Coverage: " + ", ".join(f"{k} {v:,}" for k, v in m.coverage().items() if v))
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"times": timed.seconds, "coverage": m.coverage(), "results": {name: r.__dict__ for name, r in rows}},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
