"""English → German, French, Finnish, Hungarian, Ukrainian or Russian software-string translation pairs, rebuilt
from Debian's gettext catalogues; for Russian also translated running text (manuals) with a held-out slice.

For benchmarking translation on software strings — menus, messages, dialogs — the kind of text Tweety's translation
memory and `tweety translate` on .po files are meant for. Nothing of it is bundled with the studio: the script
downloads the packages listed in PACKAGES (`apt-get download`, no installing), extracts them with `dpkg-deb -x`
into `--work` (default /tmp/gettext; a package already there is not fetched again; one that cannot be downloaded
is reported and skipped) and reads their compiled catalogues, usr/share/locale/<lang>/LC_MESSAGES/*.mo, with polib
(a domain found only under a regional variant such as de_DE or de_AT is read from that; the plain <lang> wins).

Pairs: every translated entry's msgid → msgstr (plural entries: msgid → the first plural form; fuzzy, untranslated
and header entries skipped; the context dropped, so an entry repeated under several contexts counts once), each side
on one line (whitespace and line breaks collapsed to single spaces), both sides non-empty and at most 300
characters, the English side with a letter outside its placeholders (%s, {0}; so no "%s: %s"), no
translator-credits entries (names); exact duplicate pairs kept once, in the order found.

Held out (core.memory.split_pairs' rule): `--heldout` pairs of 6–40 English words, chosen by the sha256 of their
text (the same ones every run), among the pairs whose English side and whose target side each occur in no other pair
(compared case-folded, spaces collapsed); every training pair with a side equal (case-folded) to a held-out side is
then removed, so no held-out line can be retrieved from or trained on.

Writes, under `--out` (default /tmp/gettext/<lang>): train.en, train.<lang>, heldout.en, heldout.<lang> (one pair a
line, UTF-8) and target.<lang> (the training target side: running text for `tweety adapt --target-text`); also
fetches FreeDict (dict-freedict-eng-deu / -fin / -fra / -hun / -rus) for `--dictionary` and prints the adapt and
evaluate commands. `--baselines` adds the chrF (sacrebleu) on the held-out pairs of copying the English, and of the
translation memory: the target side of the training pair whose English side is the most similar (BM25 top-1, bm25s,
lower-cased words).

Running text (`--language ru`; RUNNING lists the packages): the translated manuals Debian ships — man pages
(manpages-ru, manpages-ru-dev, rendered by groff with one paragraph a line), LibreOffice's and GIMP's help and the
Debian guides (HTML: the text of every innermost block element; hidden alternatives, scripts, code and navigation
left out). A paragraph is kept when it has at least 4 words and at least half its letters in the language's script
(so no option lists, code or untranslated English); NFC-normalised, whitespace collapsed, paragraphs over 1,000
characters cut at sentence ends, duplicates (case-folded) kept once. Held out: whole documents, chosen by the sha256
of their path, until their lines found in no other document and no pair hold `--heldout-bytes`; a held-out line
that also occurs in a training document or in the pairs is dropped, so no held-out line is ever trained on. Also
writes text.<lang> (the training running text) and target.heldout.<lang> (the held-out running text, for
`--heldout-text` and `tweety eval`); target.<lang> is then the pairs' target side followed by the running text.
Usage: python benchmarks/gettext_pairs.py [--language de|fr|fi|hu|uk|ru] [--heldout 300] [--heldout-bytes 100000]
       [--work DIR] [--out DIR] [--baselines]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polib

PACKAGES = (  # Debian 12 packages that ship their .mo catalogues themselves (no separate -l10n package needed)
    # command-line tools and system libraries
    "coreutils",
    "tar",
    "grep",
    "sed",
    "findutils",
    "diffutils",
    "gettext",
    "bash",
    "apt",
    "dpkg",
    "util-linux-locales",
    "wget",
    "gnupg-l10n",
    "libc-l10n",
    "aptitude-common",
    "network-manager",
    # desktop applications and toolkits
    "libgtk-3-common",
    "libglib2.0-data",
    "nautilus-data",
    "gnome-control-center-data",
    "evolution-data-server-common",
    "evolution-common",
    "gedit-common",
    "gnome-shell-common",
    "gnome-software-common",
    "gnome-disk-utility",
    "gnome-terminal-data",
    "gvfs-common",
    "network-manager-gnome",
    "rhythmbox-data",
    "evince-common",
    "eog",
    "file-roller",
    "synaptic",
    "xfce4-panel",
    "thunar-data",
    "xfce4-settings",
    "gimp-data",
    "pidgin-data",
    "filezilla-common",
)  # left out: e2fsprogs, parted, debconf (their catalogues are in separate packages); inkscape, gnucash-common,
#    vlc-l10n (another 20,000 pairs: over the 25,000–60,000 wanted); libgtk-4-common (mostly libgtk-3-common's)
FREEDICT = {
    "de": "dict-freedict-eng-deu",
    "fi": "dict-freedict-eng-fin",
    "fr": "dict-freedict-eng-fra",
    "hu": "dict-freedict-eng-hun",
    "ru": "dict-freedict-eng-rus",
}
MAX_CHARS = 300
HELDOUT_WORDS = (6, 40)
LETTER = re.compile(r"[^\W\d_]")
PLACEHOLDER = re.compile(
    r"%(?:\(\w+\)|\d+\$)?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|ll|[hlLqjzt])?[a-zA-Z%]"
    r"|\{\w*\}"
)  # printf and Python/.NET-style, which don't count as letters
CREDITS = {"translator-credits", "translator_credits", "translator credits"}  # msgstr: the translators' names
WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class RunningText:
    """Where a language's translated manuals are, and which letters are its script's."""

    packages: tuple[str, ...]
    script: re.Pattern[str]


RUNNING = {
    "ru": RunningText(
        (
            "manpages-ru",
            "manpages-ru-dev",
            "libreoffice-help-ru",
            "gimp-help-ru",
            "debian-faq-ru",
            "developers-reference-ru",
            "maint-guide-ru",
            "aptitude-doc-ru",
        ),
        re.compile("[а-яёА-ЯЁ]"),
    )
}
MIN_WORDS = 4
SCRIPT_SHARE = 0.5  # at least this share of a paragraph's letters in the language's script
MAX_PARAGRAPH = 1000  # longer paragraphs are cut at sentence ends into lines of about this length
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[^\W\d_])")
BLOCKS = {"p", "li", "td", "th", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "div", "blockquote", "caption"}
SKIPPED = ("script", "style", "pre", "code", "kbd", "samp", "tt", "header", "nav", "aside", "head")
GROFF = ("groff", "-k", "-Kutf8", "-man", "-t", "-Tutf8", "-P-cbou", "-rLL=20000n", "-rHY=0", "-dAD=l")


@dataclass(frozen=True)
class Split:
    train: list[tuple[str, str]]
    heldout: list[tuple[str, str]]


def fetch(package: str, work: Path) -> Path | None:
    """The folder `package` is extracted in (downloaded and extracted on first use); None if it cannot be had."""
    root = work / "root" / package
    if (root / ".done").exists():
        return root
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        run = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if run.returncode != 0 or not found:
            reason = (run.stderr.strip().splitlines() or ["no .deb written"])[-1]
            print(f"  skipped {package}: {reason} (if the index is stale: apt-get update)")
            return None
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
    (root / ".done").touch()
    return root


def catalogues(root: Path, lang: str) -> list[Path]:
    """The .mo files of `lang` under root: per domain the plain <lang> one, else the first regional variant."""
    by_domain: dict[str, Path] = {}
    locale = root / "usr/share/locale"
    variants = sorted(
        locale.glob(f"{lang}_*/LC_MESSAGES/*.mo"),
        key=lambda p: (p.parts[-3] != f"{lang}_{lang.upper()}", p.parts[-3], p.name),
    )
    for path in [*sorted(locale.glob(f"{lang}/LC_MESSAGES/*.mo")), *variants]:
        by_domain.setdefault(path.name, path)
    return [by_domain[d] for d in sorted(by_domain)]


def one_line(text: str) -> str:
    return " ".join(text.split())


def entries(path: Path) -> Iterator[tuple[str, str]]:
    """(msgid, translation) of every translated, non-fuzzy entry; plural entries give their first plural form."""
    for e in polib.mofile(str(path)):
        if not e.msgid or "fuzzy" in e.flags:
            continue
        yield e.msgid, (e.msgstr_plural.get(0, "") if e.msgid_plural else e.msgstr)


def keep(source: str, target: str) -> bool:
    return (
        bool(source)
        and bool(target)
        and len(source) <= MAX_CHARS
        and len(target) <= MAX_CHARS
        and LETTER.search(PLACEHOLDER.sub("", source)) is not None
        and source.casefold() not in CREDITS
    )


def collect(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """Normalised, filtered pairs of all catalogues, exact duplicates dropped, in the order found."""
    seen: dict[tuple[str, str], None] = {}
    for path in paths:
        for msgid, msgstr in entries(path):
            pair = (one_line(msgid), one_line(msgstr))
            if keep(*pair):
                seen.setdefault(pair, None)
    return list(seen)


def key(text: str) -> str:
    return one_line(text).casefold()


def split(pairs: list[tuple[str, str]], heldout: int) -> Split:
    """Hold out `heldout` pairs chosen by hash among those of 6–40 English words whose sides occur in no other pair;
    training keeps no pair with a side equal to a held-out side."""
    sources = Counter(key(s) for s, _ in pairs)
    targets = Counter(key(t) for _, t in pairs)
    low, high = HELDOUT_WORDS
    unique = [
        p for p in pairs if low <= len(p[0].split()) <= high and sources[key(p[0])] == 1 and targets[key(p[1])] == 1
    ]
    chosen = set(sorted(unique, key=lambda p: hashlib.sha256("\t".join(p).encode()).hexdigest())[:heldout])
    held = [p for p in pairs if p in chosen]
    banned = {key(side) for pair in held for side in pair}
    train = [p for p in pairs if p not in chosen and key(p[0]) not in banned and key(p[1]) not in banned]
    return Split(train, held)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def write(out: Path, lang: str, s: Split) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_lines(out / "train.en", (e for e, _ in s.train))
    write_lines(out / f"train.{lang}", (t for _, t in s.train))
    write_lines(out / "heldout.en", (e for e, _ in s.heldout))
    write_lines(out / f"heldout.{lang}", (t for _, t in s.heldout))
    write_lines(out / f"target.{lang}", (t for _, t in s.train))


def man_paragraphs(path: Path) -> list[str]:
    """A gzipped man page rendered by groff with no line length limit: one paragraph a line (headers, footers and
    option tags come out as lines of their own, which the filter then drops)."""
    import gzip

    source = gzip.decompress(path.read_bytes())
    if source.lstrip().startswith(b".so "):  # a link to another page, which is read on its own
        return []
    run = subprocess.run(GROFF, input=source, capture_output=True)
    return run.stdout.decode("utf-8", errors="replace").splitlines()


def html_paragraphs(path: Path) -> list[str]:
    """The text of every innermost block element of an HTML page, leaving out what a reader does not read as prose:
    scripts, code, navigation, and hidden alternatives (LibreOffice's help writes each command once per platform)."""
    import lxml.html

    root = lxml.html.fromstring(path.read_bytes())
    for element in root.xpath("//*[@hidden] | " + " | ".join(f"//{tag}" for tag in SKIPPED)):
        element.drop_tree()
    return [
        "".join(element.itertext())
        for element in root.iter(*BLOCKS)
        if not any(child.tag in BLOCKS for child in element.iterdescendants())
    ]


def documents(root: Path) -> Iterator[tuple[str, list[str]]]:
    """(path inside the package, raw paragraphs) of every man page and HTML page under an extracted package."""
    for path in sorted(root.rglob("*")):
        name = path.name
        if name.endswith(".gz") and "/man/" in path.as_posix():
            yield path.relative_to(root).as_posix(), man_paragraphs(path)
        elif name.endswith((".html", ".htm")):
            yield path.relative_to(root).as_posix(), html_paragraphs(path)


def prose(raw: str, script: re.Pattern[str]) -> list[str]:
    """A raw paragraph as clean lines of running text: NFC, one line, cut at sentence ends when long; nothing when it
    is too short or mostly not in the language's script."""
    text = one_line(unicodedata.normalize("NFC", raw))
    letters = LETTER.findall(text)
    if len(text.split()) < MIN_WORDS or len(script.findall(text)) < SCRIPT_SHARE * len(letters):
        return []
    lines, current = [], ""
    for sentence in SENTENCE_END.split(text):
        if current and len(current) + len(sentence) >= MAX_PARAGRAPH:
            lines.append(current)
            current = ""
        current = f"{current} {sentence}" if current else sentence
    return [*lines, current]


@dataclass(frozen=True)
class Running:
    train: list[str]
    heldout: list[str]
    documents: int
    heldout_documents: int


def running_text(spec: RunningText, work: Path, heldout_bytes: int, pairs: list[tuple[str, str]]) -> Running:
    """The translated manuals' paragraphs, split by document: held-out documents (by the sha256 of their path) until
    they hold `heldout_bytes`; a held-out line also found in a training document or in the pairs is dropped."""
    docs: dict[str, list[str]] = {}
    for package in spec.packages:
        root = fetch(package, work)
        for path, raws in documents(root) if root else ():
            lines = [line for raw in raws for line in prose(raw, spec.script)]
            if lines:
                docs[f"{package}/{path}"] = lines
    # Counted towards `heldout_bytes`: a document's lines found in no other document and in no pair (boilerplate
    # shared by many pages would be dropped from the held-out text, and the slice would come out short).
    in_pairs = {key(side) for pair in pairs for side in pair}
    documents_of = Counter(k for lines in docs.values() for k in {key(line) for line in lines})
    order = sorted(docs, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    held_docs: set[str] = set()
    size = 0
    for name in order:
        if size >= heldout_bytes:
            break
        held_docs.add(name)
        size += sum(
            len(line.encode()) + 1 for line in docs[name] if documents_of[key(line)] == 1 and key(line) not in in_pairs
        )
    train: dict[str, str] = {}
    for name in docs:
        if name not in held_docs:
            for line in docs[name]:
                train.setdefault(key(line), line)
    seen = set(train) | in_pairs
    heldout: dict[str, str] = {}
    for name in sorted(held_docs):
        for line in docs[name]:
            if key(line) not in seen:
                heldout.setdefault(key(line), line)
    return Running(list(train.values()), list(heldout.values()), len(docs), len(held_docs))


def freedict(lang: str, work: Path) -> Path | None:
    """The .index file of FreeDict English → `lang`, fetched like the packages."""
    package = FREEDICT.get(lang)
    root = fetch(package, work) if package else None
    found = sorted(root.glob("usr/share/dictd/*.index")) if root else []
    return found[0] if found else None


def tokens(text: str) -> list[str]:
    return WORD.findall(text.lower())


def baselines(s: Split) -> dict[str, float]:
    """chrF on the held-out pairs of copying the English and of the BM25-closest training pair's target side."""
    import bm25s
    import sacrebleu

    references = [[t for _, t in s.heldout]]
    index = bm25s.BM25()
    index.index([tokens(e) for e, _ in s.train], show_progress=False)
    ids, _ = index.retrieve([tokens(e) or ["_"] for e, _ in s.heldout], k=1, show_progress=False)
    memory = [s.train[int(row[0])][1] for row in ids]
    return {
        "copy": sacrebleu.corpus_chrf([e for e, _ in s.heldout], references).score,
        "memory": sacrebleu.corpus_chrf(memory, references).score,
    }


def commands(out: Path, lang: str, index: Path | None, project: Path, heldout_text: bool) -> list[str]:
    dictionary = f" --dictionary {index}" if index else ""
    heldout = f" --heldout-text {out}/target.heldout.{lang}" if heldout_text else ""
    return [
        f"tweety adapt --source-model default --target-text {out}/target.{lang} --parallel {out}/train.en "
        f"{out}/train.{lang}{dictionary}{heldout} --vocab-size 16000 --language {lang} --out {project}",
        f"tweety eval --model {project} --translation --pairs 0",
        f"tweety translate --model {project} --from en --to {lang} --input {out}/heldout.en "
        f"--output {out}/heldout.project.{lang}",
        f"sacrebleu {out}/heldout.{lang} -i {out}/heldout.project.{lang} -m chrf",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--language", default="de", help="target language code (de, fr, …)")
    p.add_argument("--heldout", type=int, default=300, help="held-out pairs")
    p.add_argument(
        "--heldout-bytes",
        type=int,
        default=100_000,
        help="held-out running text, in bytes of whole documents (languages with manuals: ru)",
    )
    p.add_argument("--work", type=Path, default=Path("/tmp/gettext"), help="download and extraction cache")
    p.add_argument("--out", type=Path, help="output folder (default: WORK/LANG)")
    p.add_argument("--baselines", action="store_true", help="chrF of copy and memory on the held-out pairs")
    a = p.parse_args()
    lang, work = a.language, a.work.resolve()
    out = (a.out or work / lang).resolve()
    start = time.perf_counter()

    used: list[str] = []
    paths: list[Path] = []
    for package in PACKAGES:
        root = fetch(package, work)
        found = catalogues(root, lang) if root else []
        if root and not found:
            print(f"  {package}: no {lang} catalogue")
        if found:
            used.append(package)
            paths += found
    pairs = collect(paths)
    s = split(pairs, a.heldout)
    write(out, lang, s)
    running = running_text(RUNNING[lang], work, a.heldout_bytes, pairs) if lang in RUNNING else None
    if running:
        write_lines(out / f"text.{lang}", running.train)
        write_lines(out / f"target.heldout.{lang}", running.heldout)
        write_lines(out / f"target.{lang}", [*(t for _, t in s.train), *running.train])
    index = freedict(lang, work)

    print(f"packages used: {len(used)} of {len(PACKAGES)} ({' '.join(used)})")
    print(f".mo files read: {len(paths)}")
    print(
        f"pairs: {len(pairs):,}; train {len(s.train):,}; held out {len(s.heldout):,} "
        f"(dropped from train for sharing a held-out side: {len(pairs) - len(s.train) - len(s.heldout)})"
    )
    print(f"written to {out}: train.en train.{lang} heldout.en heldout.{lang} target.{lang}")
    if running:

        def size(lines: list[str]) -> str:
            return f"{len(lines):,} lines, {sum(len(line.encode()) + 1 for line in lines):,} bytes"

        print(
            f"running text from {running.documents:,} documents: train {size(running.train)} (text.{lang}); "
            f"held out {size(running.heldout)} from {running.heldout_documents} documents (target.heldout.{lang})"
        )
    print(f"FreeDict index: {index or 'not available'}")
    if a.baselines:
        for name, chrf in baselines(s).items():
            print(f"chrF {name:>6}: {chrf:.1f}")
    print("adapt and evaluate:")
    for line in commands(out, lang, index, work / f"project-{lang}", running is not None):
        print(f"  {line}")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
