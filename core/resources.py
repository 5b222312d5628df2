"""Readers for the translation resources: parallel corpora, bilingual dictionaries and target-language text.

Every reader returns NFC-normalised text with any byte-order mark removed, and turns every malformed input into a
`TweetyError` that names the file, the line and what to do. Files may be gzip-compressed (`.gz`).

Parallel corpora: two line-aligned text files (Moses), one TSV file of `source<TAB>target`, or TMX.
Dictionaries: TSV/CSV `source,target[,weight]`, FreeDict/dictd (`.index` + `.dict` or `.dict.dz`), or TMX.
Several resources at once: `Resource` values, or a resource list file (`read_resource_list`, TOML or JSON).
"""

from __future__ import annotations

import json
import csv
import gzip
import hashlib
import io
import re
import unicodedata
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import TweetyError

MAX_LINE_BYTES = 1 << 20  # a "line" longer than this is almost certainly not text (or a file without newlines)


@dataclass(frozen=True)
class ParallelCorpus:
    source: list[str]
    target: list[str]

    def __len__(self) -> int:
        return len(self.source)


@dataclass(frozen=True)
class DictionaryEntry:
    source: str  # a word or short phrase in the source model's language
    target: str  # its translation in the target language
    weight: float = 1.0


@dataclass(frozen=True)
class OverrideLine:
    """One line of a mapping overrides file (format: `core.mapping.OVERRIDES_HELP`)."""

    target: str  # a target word, or `[piece]` for exactly one token
    source: str  # source word(s), or `[piece]`
    weight: float = 1.0
    remove: bool = False  # a `-` line: take this link out
    path: str = ""  # where the line came from, for error messages
    line: int = 0


def _open_bytes(path: Path) -> bytes:
    if not path.exists():
        raise TweetyError("file not found", path=path, fix="check the path")
    if path.is_dir():
        raise TweetyError("this is a folder, a file was expected", path=path, fix="choose a file")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic, also dictzip's .dict.dz
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # a bad header, a cut-off file, damaged compressed data
            raise TweetyError(
                f"the compressed file is damaged and cannot be unpacked ({e})",
                path=path,
                fix="download or export it again",
            ) from None
    elif path.suffix.lower() in (".gz", ".dz"):
        raise TweetyError(
            "the file name says it is compressed (gzip), but it is not",
            path=path,
            fix="rename it without .gz/.dz, or download it again",
        )
    return data


def _clean(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def read_lines(path: str | Path, *, allow_empty_lines: bool = True) -> list[str]:
    """Read a UTF-8 text file as lines (no line terminators), checking it really is text."""
    path = Path(path)
    data = _open_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise TweetyError("the file is empty", path=path, fix="choose a file with text in it")
    if b"\x00" in data[: 1 << 16]:
        raise TweetyError(
            "this looks like a binary file, not text",
            path=path,
            fix="export it as plain UTF-8 text (one sentence or entry per line)",
        )
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise TweetyError(
                f"line is {len(raw) // 1024} KiB long (the limit is 1 MiB)",
                path=path,
                line=number,
                fix="put one sentence or paragraph per line",
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TweetyError(
                f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                path=path,
                line=number,
                fix="re-save the file with UTF-8 encoding",
            ) from None
        if "\x00" in text:
            raise TweetyError(
                "contains a NUL character; this looks like a binary file",
                path=path,
                line=number,
                fix="export it as plain UTF-8 text",
            )
        text = _clean(text.rstrip("\r"))
        if not allow_empty_lines and not text.strip():
            raise TweetyError("empty line", path=path, line=number, fix="remove it or fill it in")
        out.append(text)
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_by_name(paths: list[str | None]) -> dict[str, str]:
    """File name → sha256 of each given input file (None/"" skipped): the provenance written into project.json."""
    return {Path(p).name: sha256_file(p) for p in paths if p}


def read_text(path: str | Path) -> str:
    """Target-language text as one string (lines joined with newlines), for tokenizer training and evaluation."""
    return "\n".join(read_lines(path))


def head_bytes(text: str, max_bytes: int) -> str:
    """The first `max_bytes` bytes of `text` in UTF-8, never splitting a character (0: all of it)."""
    return text.encode()[:max_bytes].decode("utf-8", errors="ignore") if max_bytes else text


# --- several resources at once ------------------------------------------------------------------------------------

PARALLEL, DICTIONARY = "parallel", "dictionary"


@dataclass(frozen=True)
class Resource:
    """A translation resource as the user gave it, with the weight its evidence gets when resources are mixed."""

    kind: str  # PARALLEL | DICTIONARY
    files: tuple[str, ...]  # parallel: (source, target) or one .tsv/.tmx file; dictionary: one file
    weight: float = 1.0
    name: str = ""  # label in reports; default: the first file's name

    @property
    def label(self) -> str:
        return self.name or Path(self.files[0]).name

    def check(self, where: str | Path | None = None) -> None:
        counts = {PARALLEL: (1, 2), DICTIONARY: (1, 1)}.get(self.kind)
        if counts is None:
            raise TweetyError(f"unknown resource kind {self.kind!r}", path=where, fix="use parallel or dictionary")
        if not counts[0] <= len(self.files) <= counts[1]:
            raise TweetyError(
                f"a {self.kind} resource takes {' or '.join(map(str, sorted(set(counts))))} file(s), "
                f"got {len(self.files)}",
                path=where,
                fix="parallel: SOURCE TARGET (or one .tsv/.tmx); dictionary: one file",
            )
        if not self.weight >= 0:
            raise TweetyError(f"the weight of {self.label} is {self.weight}", path=where, fix="use a weight ≥ 0")

    def read(self) -> ParallelCorpus | list[DictionaryEntry]:
        if self.kind == PARALLEL:
            return read_parallel(self.files[0], self.files[1] if len(self.files) > 1 else None)
        return read_dictionary(self.files[0])


def distinct_labels(resources: list[Resource]) -> list[Resource]:
    """The same resources, renamed where two would share a label (`bible.es`, `bible.es-2`)."""
    seen: dict[str, int] = {}
    out = []
    for r in resources:
        seen[r.label] = seen.get(r.label, 0) + 1
        out.append(r if seen[r.label] == 1 else Resource(r.kind, r.files, r.weight, f"{r.label}-{seen[r.label]}"))
    return out


def read_resource_list(path: str | Path) -> list[Resource]:
    """A resource list: TOML (`[[parallel]] files = ["a.en", "a.es"]  weight = 2  name = "bible"`,
    `[[dictionary]] file = "d.tsv"`) or the same structure as JSON. Relative paths are relative to the list."""
    path = Path(path)
    text = "\n".join(read_lines(path))
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except (ValueError, json.JSONDecodeError) as e:  # tomllib.TOMLDecodeError is a ValueError
        raise TweetyError(
            f"is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} ({e})",
            path=path,
            fix='see README, "Several resources"',
        ) from None
    if not isinstance(data, dict) or set(data) - {PARALLEL, DICTIONARY}:
        raise TweetyError(
            f"expected only [[{PARALLEL}]] and [[{DICTIONARY}]] entries",
            path=path,
            fix='see README, "Several resources"',
        )
    out = []
    for kind in (PARALLEL, DICTIONARY):
        for i, entry in enumerate(data.get(kind, []), start=1):
            where = f"{path} ({kind} #{i})"
            if not isinstance(entry, dict) or set(entry) - {"files", "file", "weight", "name"}:
                raise TweetyError("expected keys files/file, weight, name", path=where)
            files = entry.get("files", [entry["file"]] if "file" in entry else [])
            files = tuple(str(path.parent / f) for f in ([files] if isinstance(files, str) else files))
            try:
                weight = float(entry.get("weight", 1.0))
            except (TypeError, ValueError):
                raise TweetyError(f"the weight {entry.get('weight')!r} is not a number", path=where) from None
            r = Resource(kind, files, weight, str(entry.get("name", "")))
            r.check(where)
            out.append(r)
    if not out:
        raise TweetyError("lists no resources", path=path, fix="add a [[parallel]] or [[dictionary]] entry")
    return out


# --- parallel corpora -------------------------------------------------------------------------------------------


def read_parallel(source_path: str | Path, target_path: str | Path | None = None) -> ParallelCorpus:
    """Two Moses files (`source_path`, `target_path`), or one TSV or TMX file when `target_path` is None.

    Pairs where either side is blank are dropped (common in exports); everything else must line up."""
    source_path = Path(source_path)
    if target_path is None:
        if _is_tmx(source_path):
            pairs = list(_read_tmx(source_path))
            if not pairs:
                raise TweetyError(
                    "the TMX file holds no translation units with text in two languages",
                    path=source_path,
                    fix="export the translation memory again, with both languages",
                )
        else:
            pairs = [(s, t) for _, s, t, _ in _read_table(source_path, min_columns=2, max_columns=2, what="corpus")]
        src, tgt = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        target_path = Path(target_path)
        src, tgt = read_lines(source_path), read_lines(target_path)
        if len(src) != len(tgt):
            raise TweetyError(
                f"has {len(src)} lines but {target_path.name} has {len(tgt)}; the two sides of a "
                "parallel corpus must have one sentence per line, in the same order",
                path=source_path,
                fix="check that both files come from the same export",
            )
    keep = [i for i, (s, t) in enumerate(zip(src, tgt)) if s.strip() and t.strip()]
    if not keep:
        raise TweetyError(
            "no sentence pairs with text on both sides: every pair has an empty side",
            path=source_path,
            fix="check the file format, and that both sides are filled in",
        )
    return ParallelCorpus([src[i].strip() for i in keep], [tgt[i].strip() for i in keep])


def _is_tmx(path: Path) -> bool:
    return path.suffix.lower() == ".tmx" or path.name.lower().endswith(".tmx.gz")


def _read_tmx(path: Path) -> Iterator[tuple[str, str]]:
    """TMX: each <tu> with two <tuv> variants; the first language seen is the source side."""
    data = _open_bytes(path)
    if b"\x00" in data[: 1 << 16]:
        raise TweetyError("this looks like a binary file, not TMX", path=path, fix="export the memory as TMX")
    languages: list[str] = []
    try:
        for _, element in ET.iterparse(io.BytesIO(data)):
            if element.tag != "tu":
                continue
            variants = {}
            for tuv in element.iter("tuv"):
                lang = (tuv.get("{http://www.w3.org/XML/1998/namespace}lang") or tuv.get("lang") or "").lower()
                seg = tuv.find("seg")
                if seg is not None:
                    variants[lang] = _clean("".join(seg.itertext()).strip())
            for lang in variants:
                if lang not in languages:
                    languages.append(lang)
            if len(languages) > 2:
                raise TweetyError(
                    f"has more than two languages ({', '.join(languages)})",
                    path=path,
                    fix="export a TMX with exactly one source and one target language",
                )
            if len(languages) == 2 and all(lang in variants for lang in languages):
                yield variants[languages[0]], variants[languages[1]]
            element.clear()
    except ET.ParseError as e:
        raise TweetyError(
            f"is not valid TMX/XML ({e})", path=path, line=e.position[0], fix="check the file was exported completely"
        ) from None


def _read_table(
    path: Path,
    *,
    min_columns: int,
    max_columns: int,
    what: str,
    lines: list[str] | None = None,
    fix: str = "write `source<TAB>target` on every line",
) -> Iterator[tuple[int, str, str, str]]:
    """Rows of a TSV (or CSV, by extension or when no tab is present); `#` lines and blank lines are skipped."""
    lines = read_lines(path) if lines is None else lines
    sample = "\n".join(lines[:50])
    delimiter = "\t" if "\t" in sample or path.suffix.lower() in {".tsv", ".tab"} else ","
    rows = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE)
    found = 0
    for number, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip() or row[0].startswith("#"):
            continue
        if len(row) < min_columns:
            raise TweetyError(
                f"has {len(row)} column; a {what} needs {min_columns} columns separated by "
                f"{'tabs' if delimiter == chr(9) else 'commas'}",
                path=path,
                line=number,
                fix=fix,
            )
        if len(row) > max_columns:
            raise TweetyError(
                f"has {len(row)} columns; at most {max_columns} expected",
                path=path,
                line=number,
                fix="remove the extra columns (or quote fields that contain the separator)",
            )
        found += 1
        yield number, row[0].strip(), row[1].strip(), row[2].strip() if len(row) > 2 else ""
    if not found:
        raise TweetyError(f"no {what} entries found", path=path, fix="check the file format")


def _weight(text: str, path: Path, line: int) -> float:
    try:
        value = float(text) if text else 1.0
    except ValueError:
        value = -1.0
    if not value > 0:
        raise TweetyError(
            f"the weight {text!r} is not a positive number",
            path=path,
            line=line,
            fix="use a positive number in the last column, or leave it out",
        )
    return value


# --- the linguist's mapping overrides -------------------------------------------------------------------------------


def read_overrides(path: str | Path) -> list[OverrideLine]:
    """A mapping overrides file: `TARGET<TAB>SOURCE[<TAB>WEIGHT]` and `-<TAB>TARGET<TAB>SOURCE` lines, `#` comments.
    A file of comments only (as the wizard first writes it) holds no overrides."""
    path = Path(path)
    lines = read_lines(path) if path.exists() and path.stat().st_size else []
    if not any(line.strip() and not line.startswith("#") for line in lines):
        if not path.exists():
            raise TweetyError("file not found", path=path, fix="check the path")
        return []
    out = []
    for number, first, second, third in _read_table(
        path, min_columns=2, max_columns=3, what="override", lines=lines, fix="write `TARGET<TAB>SOURCE` on every line"
    ):
        if first == "-":
            if not second or not third:
                raise TweetyError(
                    "a `-` line needs a target and a source",
                    path=path,
                    line=number,
                    fix="write `-<TAB>TARGET<TAB>SOURCE`",
                )
            out.append(OverrideLine(second, third, remove=True, path=str(path), line=number))
        elif first and second:
            out.append(OverrideLine(first, second, _weight(third, path, number), path=str(path), line=number))
        else:
            raise TweetyError("an empty target or source", path=path, line=number, fix="fill in both columns")
    return out


def format_override(o: OverrideLine) -> str:
    """The overrides-file line for `o` (what `read_overrides` reads back)."""
    if o.remove:
        return f"-\t{o.target}\t{o.source}"
    return f"{o.target}\t{o.source}" + (f"\t{o.weight:g}" if o.weight != 1.0 else "")


# --- dictionaries -------------------------------------------------------------------------------------------------


def read_dictionary(path: str | Path) -> list[DictionaryEntry]:
    """A bilingual dictionary, format chosen by file name: `.index`/`.dict`/`.dict.dz` (dictd), `.tmx`, else TSV/CSV."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".index", ".dict", ".dict.dz")):
        return _read_dictd(path)
    if _is_tmx(path):
        entries = [DictionaryEntry(s, t) for s, t in _read_tmx(path) if s and t]
        if not entries:
            raise TweetyError(
                "the TMX file holds no translation units with text in two languages",
                path=path,
                fix="export the dictionary or memory again, with both languages",
            )
        return entries
    entries = []
    for number, source, target, weight in _read_table(path, min_columns=2, max_columns=3, what="dictionary"):
        value = _weight(weight, path, number)
        if source and target:
            entries.append(DictionaryEntry(source, target, value))
    if not entries:
        raise TweetyError(
            "no entry has both a source word and a translation",
            path=path,
            fix="fill in both columns: `source<TAB>translation`",
        )
    return entries


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _dictd_number(text: str, path: Path, line: int) -> int:
    value = 0
    for char in text:
        if char not in _B64:
            raise TweetyError(f"bad dictd offset {text!r}", path=path, line=line, fix="the .index file is damaged")
        value = value * 64 + _B64[char]
    return value


def _read_dictd(path: Path) -> list[DictionaryEntry]:
    """dictd: the `.index` lists `headword<TAB>offset<TAB>length` (base64 numbers) into the `.dict` text."""
    stem = re.sub(r"\.(index|dict|dict\.dz)$", "", str(path), flags=re.IGNORECASE)
    index_path = Path(stem + ".index")
    dict_path = next((p for p in (Path(stem + ".dict.dz"), Path(stem + ".dict")) if p.exists()), None)
    if dict_path is None or not index_path.exists():
        raise TweetyError(
            "a dictd dictionary needs both the .index and the .dict (or .dict.dz) file",
            path=path,
            fix="put both files in the same folder",
        )
    body = _open_bytes(dict_path)
    entries = []
    for number, line in enumerate(read_lines(index_path), start=1):
        if not line.strip() or line.startswith("00database") or line.startswith("00-database"):
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise TweetyError(
                f"expected `headword<TAB>offset<TAB>length`, found {len(fields)} field(s)",
                path=index_path,
                line=number,
                fix="the .index file is damaged or not a dictd index",
            )
        headword = _clean(fields[0].strip())
        start, length = (_dictd_number(f, index_path, number) for f in fields[1:])
        if start + length > len(body):
            raise TweetyError(
                "points past the end of the .dict file",
                path=index_path,
                line=number,
                fix="the .index and .dict files do not belong together",
            )
        try:
            definition = _clean(body[start : start + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise TweetyError(
                "the definition is not valid UTF-8", path=dict_path, line=number, fix="the dictionary file is damaged"
            ) from None
        for target in _dictd_translations(definition):
            entries.append(DictionaryEntry(headword, target))
    if not entries:
        raise TweetyError(
            "no dictionary entries found", path=index_path, fix="check that this is a FreeDict dictionary"
        )
    return entries


def _dictd_translations(definition: str) -> Iterator[str]:
    """FreeDict definitions: first line is the headword (with pronunciation), then numbered senses,
    each a comma/semicolon-separated list of translations, sometimes with notes in parentheses."""
    for line in definition.splitlines()[1:]:
        line = re.sub(r"^\s*\d+\.\s*", "", line)
        if not line or ":" in line.split(" ")[0] or line.lstrip().startswith(("Note", "see", "See", "Synonym")):
            continue
        line = re.sub(r"\([^)]*\)|\[[^]]*\]|<[^>]*>", "", line)
        for part in re.split(r"[;,]", line):
            part = part.strip(" .\t\"'")
            if part and len(part.split()) <= 3:
                yield part


def read_json(path: Path, missing: str, fix: str = "choose the folder of an adapted model") -> dict:
    """A JSON file a folder must have: a missing or damaged one is a clear error naming the file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TweetyError(missing, path=path.parent, fix=fix) from None
    except json.JSONDecodeError as e:
        raise TweetyError(
            f"damaged {path.name} ({e})", path=path, fix="restore the file or re-run the step that wrote it"
        ) from None
