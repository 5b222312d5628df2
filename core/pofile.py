"""Translating a gettext catalogue (.po, or a .pot template) for a program's menus and messages: every empty msgstr
filled by a translator, with the format placeholders, the keyboard accelerator and the surrounding whitespace and
line breaks exactly as in the msgid, into a file that `msgfmt --check` accepts.

The translator (an LLM, one line in, one line out) sees natural text: placeholders become {0}, {1}… and are put back
afterwards. A translation that loses, adds or reorders a placeholder is retried once; if that fails too the entry is
left empty and flagged fuzzy for a person — never written wrong. As with a text file (core.translation), the output
appears atomically and a killed run resumes where it stopped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polib

from core.errors import TweetyError, plain_os_error
from core.jobs import CancelToken, ProgressFn, atomic_file
from core.translation import partial_for, translate_lines_resumable

# What msginit writes when it knows nothing of the language: two forms, "one" and "other".
DEFAULT_PLURAL_FORMS = "nplurals=2; plural=(n != 1);"

# A placeholder the program fills in at run time, matched whatever the entry's format flag (xgettext flags only what
# it recognises). No space flag in printf ("% d"): "100% sure" would read as "% s". A stray "%", "{" or "}" is a
# placeholder too, so a translation that adds or drops one (msgfmt refuses "50 %" in a c-format entry) is caught.
_PLACEHOLDER = re.compile(
    r"""(
    %%                                                  # a literal percent sign
  | %\([^()]*\)[-+ #0]*\d*(?:\.\d+)?[a-zA-Z]            # Python, named: %(name)s, %(count)5.2f
  | %(?:\d+\$)?[-+#0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?     # printf: %s, %1$s, %-5.2f, %lu, %zu, %'d
     (?:hh|ll|[hlLqjzt])?[diouxXeEfFgGaAcsSpn]
  | \{[^{}\s]*\}                                        # brace style: {}, {0}, {name}, {0:>8}, {name!r}
  | [%{}]                                               # a stray format character
)""",
    re.VERBOSE,
)
_MASK = re.compile(r"\{(\d+)\}")  # what the translator sees instead of the n-th placeholder
# A keyboard accelerator: "&" (Qt, Windows) or "_" (GTK) before the letter it underlines. "&&" and "__" are literal,
# "&amp;" is an entity and " & " a word; "_" inside a word (max_tokens) is part of a name, so it counts only at a
# word's start.
_ACCELERATOR = re.compile(r"(?<!&)&(?!\w+;)(?=[^\W\d_])|(?<!\w)_(?=[^\W\d_])")
# polib reads an unterminated string (`msgstr "Open`) as if it were closed; msgfmt refuses it. Each quoted line is
# checked first, so such a file is refused with its line number instead of being translated wrongly.
_QUOTED_LINE = re.compile(rb'(?:#~\|?\s*|#\|\s*)?(?:msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)?\s*(".*)')
_WHOLE_STRINGS = re.compile(rb'(?:"(?:[^"\\]|\\.)*"\s*)+')


@dataclass(frozen=True)
class PoResult:
    translated: int  # entries filled in
    fuzzy: int  # entries the translator failed on: left empty, flagged fuzzy for a person
    kept: int  # entries left as they were: already translated, or obsolete


def is_po(path: str | Path) -> bool:
    """Whether `path` is a gettext catalogue (translate it with translate_po, not line by line)."""
    return Path(path).suffix.lower() in (".po", ".pot")


def translate_po(
    in_path: str | Path,
    out_path: str | Path,
    translate_lines: Callable[[list[str]], list[str]],
    *,
    key: str,
    language: str | None = None,
    overwrite: bool = False,
    batch_size: int = 1,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> PoResult:
    """Fill every empty msgstr (and empty plural form) of `in_path` into `out_path`, written atomically; entries
    already translated, obsolete entries and the header stay as they were, but for what a valid .po needs (UTF-8, a
    Plural-Forms, and `language` where the header has none). `translate_lines` takes up to `batch_size` lines; `key`
    names the model and languages, so that a run stopped by cancel, Ctrl-C or a crash resumes only with the same."""
    in_path, out_path = Path(in_path), Path(out_path)
    partial = partial_for(out_path, overwrite=overwrite)
    catalogue = _read(in_path)
    _complete_header(catalogue, language)
    nplurals = int(re.search(r"nplurals\s*=\s*(\d+)", catalogue.metadata["Plural-Forms"])[1])
    todo = [
        (entry, {form: _Message.of(text) for form, text in _empty_forms(entry, nplurals).items()})
        for entry in catalogue
        if not entry.obsolete
    ]
    todo = [(entry, forms) for entry, forms in todo if forms]
    segments = list(
        dict.fromkeys(segment for _, forms in todo for message in forms.values() for segment in message.segments)
    )
    run = dict(key=key, batch_size=batch_size, progress=progress, cancel=cancel)
    retry_partial = partial.with_suffix(".retry.partial")
    translations = _translate(segments, translate_lines, partial, retry_partial, run)
    fuzzy = 0
    for entry, forms in todo:
        texts = {form: message.render(translations) for form, message in forms.items()}
        if None in texts.values():  # an entry is filled whole or not at all: msgfmt refuses half a plural
            fuzzy += 1
            if "fuzzy" not in entry.flags:
                entry.flags.append("fuzzy")
            continue
        for form, text in texts.items():
            if form is None:
                entry.msgstr = text
            else:
                entry.msgstr_plural[form] = text
    with atomic_file(out_path) as tmp:
        catalogue.save(str(tmp))
    partial.unlink(missing_ok=True)
    retry_partial.unlink(missing_ok=True)
    return PoResult(translated=len(todo) - fuzzy, fuzzy=fuzzy, kept=len(catalogue) - len(todo))


@dataclass(frozen=True)
class _Segment:
    """One line of a message without its surrounding whitespace: the text between placeholders, and those."""

    pieces: tuple[str, ...]  # one more than placeholders
    placeholders: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> _Segment:
        parts = _PLACEHOLDER.split(text)
        return cls(tuple(parts[0::2]), tuple(parts[1::2]))

    @property
    def text(self) -> str:
        return _interleave(self.pieces, self.placeholders)

    @property
    def masked(self) -> str:
        return _interleave(self.pieces, [f"{{{n}}}" for n in range(len(self.placeholders))])

    @property
    def wordy(self) -> bool:
        """Whether there is anything to translate ("%s:" or "…" is copied as it is)."""
        return any(map(_has_letters, self.pieces))

    def unmask(self, translation: str) -> str | None:
        """`translation` of `masked` with the placeholders put back, or None when one went missing, came twice or
        moved out of turn (%s, %d and {} take the program's arguments in order: swapping two swaps what they show)."""
        order = [int(n) for n in _MASK.findall(translation)]
        if sorted(order) != list(range(len(self.placeholders))):
            return None
        in_turn = [n for n in order if _keeps_order(self.placeholders[n])]
        if in_turn != sorted(in_turn):
            return None
        return self._checked(_MASK.sub(lambda m: self.placeholders[int(m[1])], translation))

    def rejoin(self, translated: dict[str, str]) -> str | None:
        """The text between placeholders translated piece by piece (`translated`: stripped piece → translation),
        joined around the placeholders in their own order; None when a piece came back empty."""
        pieces = []
        for piece in self.pieces:
            lead, core, trail = _around(piece)
            if _has_letters(core):
                if not translated.get(core):
                    return None
                piece = lead + translated[core] + trail
            pieces.append(piece)
        return self._checked(_interleave(pieces, self.placeholders))

    def _checked(self, text: str) -> str | None:
        """`text` if it has words and exactly this segment's placeholders (a translator may add one, and a stray
        "%" next to a translated word may make a new one)."""
        if not _has_letters(_PLACEHOLDER.sub("", text)):
            return None
        return text if Counter(_PLACEHOLDER.findall(text)) == Counter(self.placeholders) else None


@dataclass(frozen=True)
class _Message:
    """A msgid (or msgid_plural) ready to translate: its accelerator marker taken out, and each line split from the
    whitespace around it (a translator trims it, and msgfmt wants a leading or trailing \\n kept)."""

    accelerator: str  # "&" or "_", or "" when the message has none
    lines: tuple[tuple[str, _Segment, str], ...]  # (leading whitespace, segment, trailing whitespace)

    @classmethod
    def of(cls, text: str) -> _Message:
        accelerator, text = _take_accelerator(text)
        lines = [_around(line) for line in text.split("\n")]
        return cls(accelerator, tuple((lead, _Segment.of(core), trail) for lead, core, trail in lines))

    @property
    def segments(self) -> list[_Segment]:
        return [segment for _, segment, _ in self.lines if segment.wordy]

    def render(self, translations: dict[_Segment, str | None]) -> str | None:
        """The translated message, or None when a line of it has no good translation."""
        lines = []
        for lead, segment, trail in self.lines:
            text = translations[segment] if segment.wordy else segment.text
            if text is None:
                return None
            lines.append(lead + text + trail)
        return _put_accelerator(self.accelerator, "\n".join(lines))


def _translate(
    segments: list[_Segment],
    translate_lines: Callable[[list[str]], list[str]],
    partial: Path,
    retry_partial: Path,
    run: dict,
) -> dict[_Segment, str | None]:
    """Each segment's translation with its placeholders in place, or None when even the retry failed."""
    masked = _translate_unique([segment.masked for segment in segments], translate_lines, partial, run)
    done = {segment: segment.unmask(masked.get(segment.masked, "")) for segment in segments}
    # The retry translates the text between placeholders piece by piece: the translator never sees a placeholder, so
    # it cannot drop, repeat or move one (which a model that just lost {0} would likely do again however it was
    # masked). Word order around the placeholders may read less naturally, so this is the fallback, not the first try.
    # A line without placeholders that came back empty is not retried: the same text would get the same reply.
    failed = [segment for segment, text in done.items() if text is None and segment.placeholders]
    pieces = _translate_unique(
        [piece.strip() for segment in failed for piece in segment.pieces if _has_letters(piece)],
        translate_lines,
        retry_partial,
        run,
    )
    done.update({segment: segment.rejoin(pieces) for segment in failed})
    return done


def _translate_unique(
    texts: list[str], translate_lines: Callable[[list[str]], list[str]], partial: Path, run: dict
) -> dict[str, str]:
    unique = list(dict.fromkeys(texts))  # a catalogue repeats "OK" and "Cancel": each is translated once
    if not unique:
        return {}
    return dict(zip(unique, translate_lines_resumable(unique, translate_lines, partial, **run)))


def _empty_forms(entry: polib.POEntry, nplurals: int) -> dict[int | None, str]:
    """The empty msgstr (key None) or empty plural forms (their index) of `entry`, each with the text it translates:
    form 0 the msgid, the others msgid_plural."""
    if not entry.msgid_plural:
        return {} if entry.msgstr else {None: entry.msgid}
    return {
        form: entry.msgid_plural if form else entry.msgid
        for form in range(nplurals)
        if not entry.msgstr_plural.get(form)
    }


def _take_accelerator(text: str) -> tuple[str, str]:
    """(marker, text without it) when `text` has exactly one accelerator outside its placeholders; with two or more
    it cannot tell which one is meant, and leaves the text alone."""
    spans = [m.span() for m in _PLACEHOLDER.finditer(text)]
    found = [m.start() for m in _ACCELERATOR.finditer(text) if not any(a <= m.start() < b for a, b in spans)]
    if len(found) != 1:
        return "", text
    return text[found[0]], text[: found[0]] + text[found[0] + 1 :]


def _put_accelerator(marker: str, text: str) -> str:
    """`marker` before the first letter of `text` that is not in a placeholder (which word of a translation matches
    the underlined one is unknown; the first is where a translator would most often put it)."""
    if not marker:
        return text
    spans = [m.span() for m in _PLACEHOLDER.finditer(text)]
    for i, char in enumerate(text):
        if char.isalpha() and not any(a <= i < b for a, b in spans):
            return text[:i] + marker + text[i:]
    return text


def _around(text: str) -> tuple[str, str, str]:
    """(leading whitespace, the rest stripped, trailing whitespace); all whitespace counts as leading."""
    core = text.strip()
    lead = text[: text.index(core)] if core else text
    return lead, core, text[len(lead) + len(core) :]


def _interleave(pieces: list[str] | tuple[str, ...], between: list[str] | tuple[str, ...]) -> str:
    return "".join(piece + joint for piece, joint in zip(pieces, [*between, ""]))


def _has_letters(text: str) -> bool:
    return any(char.isalpha() for char in text)


def _keeps_order(placeholder: str) -> bool:
    """%s, %d and {} take the program's arguments in turn; %1$s, %(name)s and {name} say which they take."""
    return placeholder == "{}" or (
        len(placeholder) > 1 and placeholder[0] == "%" and placeholder[1] not in "%(" and "$" not in placeholder
    )


def _read(path: Path) -> polib.POFile:
    """The catalogue in `path`, or a TweetyError naming the damaged line."""
    fix = "mend that line (`msgfmt --check` or any PO editor shows what is wrong there), then run it again"
    if not path.is_file():
        raise TweetyError("there is no such file", path=path, fix="check the file name")
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        quoted = _QUOTED_LINE.fullmatch(line.strip())
        if quoted and not _WHOLE_STRINGS.fullmatch(quoted[1]):
            raise TweetyError(
                'the .po file is damaged: a string is not closed (a " missing at the end of the line, '
                'or a " inside it without its backslash)',
                path=path,
                line=number,
                fix=fix,
            )
    try:
        return polib.pofile(str(path))
    except (OSError, ValueError) as e:  # polib: "Syntax error in po file X (line 7): unescaped double quote found"
        found = re.search(r"\(line (\d+)\)(?::\s*(.+))?", str(e))
        if found is None:
            raise plain_os_error(e) or TweetyError(
                f"the .po file cannot be read: {e}", path=path, fix="check that it is a gettext .po or .pot file"
            ) from None
        raise TweetyError(
            f"the .po file is damaged: {found[2] or 'syntax error'}", path=path, line=int(found[1]), fix=fix
        ) from None


def _complete_header(catalogue: polib.POFile, language: str | None) -> None:
    """What a valid .po needs and a .pot template lacks ("charset=CHARSET", "nplurals=INTEGER"); the rest as it was."""
    metadata = catalogue.metadata
    # Translations are written in UTF-8 whatever the input's charset (a Latin-1 catalogue cannot hold Greek).
    if not re.search(r"charset=utf-8\b", metadata.get("Content-Type", ""), re.IGNORECASE):
        metadata["Content-Type"] = "text/plain; charset=UTF-8"
    catalogue.encoding = "utf-8"
    if not re.search(r"nplurals\s*=\s*\d+", metadata.get("Plural-Forms", "")):
        metadata["Plural-Forms"] = DEFAULT_PLURAL_FORMS
    if language and not metadata.get("Language", "").strip():
        metadata["Language"] = language
