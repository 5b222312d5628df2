"""Build the embedded English–Spanish demo corpus from Debian's SWORD Bible modules.

Run once by a developer (needs `apt-get install sword-text-kjv sword-text-sparv` and `pip install pysword`);
the compressed result is committed under resources/demo/ so that `make demo` needs no apt.

English: King James Version (engKJV2006eb), Spanish: Reina-Valera 1909 (spaRV1909eb). Both are public domain and
both use the KJV versification, so verse i of one is verse i of the other. Held-out books (never seen by the
tokenizer, aligner or fine-tuning): Ruth, Esther, Jonah, Galatians, James, 1 John — narrative, poetry-free prose and
epistles from both testaments.
"""

from __future__ import annotations

import argparse
import gzip
import re
from pathlib import Path

from pysword.modules import SwordModules

HELDOUT_BOOKS = ("Ruth", "Esther", "Jonah", "Galatians", "James", "I John")
MODULES = {"en": "engKJV2006eb", "es": "spaRV1909eb"}


def clean(verse: str) -> str:
    # SWORD's plain-text rendering keeps paragraph marks and runs of spaces from the markup.
    return re.sub(r"\s+", " ", verse.replace("¶", " ")).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sword", default="/usr/share/sword")
    parser.add_argument("--out", default=str(Path(__file__).parent / "demo"))
    args = parser.parse_args()
    modules = SwordModules(args.sword)
    modules.parse_modules()
    bibles = {lang: modules.get_bible_from_module(name) for lang, name in MODULES.items()}
    structure = bibles["en"].get_structure()
    splits: dict[str, dict[str, list[str]]] = {"train": {"en": [], "es": []}, "heldout": {"en": [], "es": []}}
    for testament in ("ot", "nt"):
        for book in structure.get_books()[testament]:
            split = "heldout" if book.name in HELDOUT_BOOKS else "train"
            for chapter, n_verses in enumerate(book.chapter_lengths, start=1):
                for verse in range(1, n_verses + 1):
                    pair = {
                        lang: clean(b.get(books=[book.name], chapters=[chapter], verses=[verse]))
                        for lang, b in bibles.items()
                    }
                    if all(pair.values()):  # a few verses are empty in one module (merged into a neighbour)
                        for lang, text in pair.items():
                            splits[split][lang].append(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, sides in splits.items():
        for lang, lines in sides.items():
            path = out / f"bible.{split}.{lang}.gz"
            with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
                f.write(("\n".join(lines) + "\n").encode("utf-8"))
            print(f"{path}: {len(lines)} lines")


if __name__ == "__main__":
    main()
