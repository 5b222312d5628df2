"""The linguist's edit → re-initialise round trip on the demo data (goal: under 10 s on 2 cores, model load included).

Needs `make demo`'s tokenizer and alignment (demo-output/tokenizer, demo-output/alignment). Writes an overrides file
of a few corrections, then times (1) the two commands a user runs, `tweety map --overrides` and `tweety init`, each a
fresh process (imports, tokenizers, cached alignment counts, source weights read from disk), and (2) the same in one
process, as the wizard does it. Checks that exactly the named rows changed.
Usage: python benchmarks/overrides.py [--demo DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT

from core import align, init, mapping, models, resources, tokenizer

CORRECTIONS = "[▁Jehová]\tLORD\n[▁Dios]\tGod\t3\n[▁Dios]\tLord\n-\ttierra\t[Ġground]\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default=str(ROOT / "demo-output"), help="folder with tokenizer/ and alignment/")
    p.add_argument("--out", default="", help="work folder (default: a temporary one)")
    a = p.parse_args()
    demo = Path(a.demo)
    out = Path(a.out or tempfile.mkdtemp(prefix="tweety-overrides-"))
    out.mkdir(parents=True, exist_ok=True)
    fix = out / "overrides.tsv"
    fix.write_text(mapping.OVERRIDES_HELP + CORRECTIONS, encoding="utf-8")

    def tweety(*args) -> float:
        start = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "core.cli", *map(str, args)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL
        )
        return time.monotonic() - start

    for name in ("cli-map", "cli-model", "map", "model"):  # outputs of an earlier run: replaced
        subprocess.run(["rm", "-rf", str(out / name)], check=True)
    t_map = tweety(
        "map",
        "--tokenizer",
        demo / "tokenizer",
        "--alignment",
        demo / "alignment",
        "--overrides",
        fix,
        "--out",
        out / "cli-map",
    )
    t_init = tweety("init", "--tokenizer", demo / "tokenizer", "--mapping", out / "cli-map", "--out", out / "cli-model")
    print(f"command line: tweety map --overrides {t_map:.1f} s + tweety init {t_init:.1f} s = {t_map + t_init:.1f} s")

    start = time.monotonic()
    source_tok, target_tok = models.load_tokenizer("default"), tokenizer.load_tokenizer(demo / "tokenizer")
    loaded = time.monotonic()
    m = mapping.build_mapping(
        source_tok,
        target_tok,
        alignment_counts=align.load_counts(demo / "alignment"),
        overrides=resources.read_overrides(fix),
    )
    m.save(out / "map", target_tok, source_tok)
    mapped = time.monotonic()
    init.initialise_folder(models.resolve("default"), m, target_tok, out / "model")
    done = time.monotonic()
    print(
        f"one process (the wizard's way): tokenizers {loaded - start:.1f} s, map {mapped - loaded:.1f} s, "
        f"initialise {done - mapped:.1f} s; total {done - start:.1f} s"
    )

    base = mapping.build_mapping(source_tok, target_tok, alignment_counts=align.load_counts(demo / "alignment"))
    changed = sorted(set((base.matrix != m.matrix).nonzero()[0].tolist()))
    print(
        f"rows changed: {len(changed)} ({', '.join(target_tok.convert_ids_to_tokens(changed))}); "
        f"coverage: {', '.join(f'{k} {v:,}' for k, v in m.coverage().items() if v)}"
    )


if __name__ == "__main__":
    main()
