"""Translating gettext catalogues (core.pofile) and the resumable line translation under it (core.translation).

The translators here are plain functions (upper-casing, or failing on purpose): what is tested is what happens
around them — placeholders, accelerators, whitespace, plurals, the header, atomic output, resuming — and every
output must pass `msgfmt --check` (GNU gettext; CI installs it, and a missing msgfmt fails these tests)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import polib
import pytest

from core.errors import TweetyError
from core.pofile import PoResult, is_po, translate_po
from core.translation import translate_lines_to_file

HEADER = r"""# Demo catalogue.
msgid ""
msgstr ""
"Project-Id-Version: demo 1.0\n"
"Language: pl\n"
"MIME-Version: 1.0\n"
"Content-Type: text/plain; charset=UTF-8\n"
"Content-Transfer-Encoding: 8bit\n"
"Plural-Forms: nplurals=3; plural=(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2);\n"
"""
ENTRIES = r"""
#, c-format
msgid "Copying %s to %s…"
msgstr ""

#, c-format
msgid "%1$s has %2$d%% left\n"
msgstr ""

#, c-format
msgid "%s has %d new files"
msgstr ""

#, python-format
msgid "Hello %(name)s, you have %(count)d new messages"
msgstr ""

#, python-brace-format
msgid "Saved {0} of {total} files"
msgstr ""

#, c-format
msgid "%d file was deleted"
msgid_plural "%d files were deleted"
msgstr[0] ""
msgstr[1] ""
msgstr[2] ""

msgid "_Open"
msgstr ""

msgid "&Save"
msgstr ""

msgid "Save _As…"
msgstr ""

msgid "1. _First"
msgstr ""

msgid "Tom &amp; Jerry & friends"
msgstr ""

msgid ""
"First line\n"
"  second line, indented\n"
msgstr ""

msgctxt "menu"
msgid "Open"
msgstr ""

msgid "Quit"
msgstr "Beenden"

#~ msgid "Old"
#~ msgstr ""
"""
EXPECTED = {
    "Copying %s to %s…": "COPYING %s TO %s…",
    "%1$s has %2$d%% left\n": "%1$s HAS %2$d%% LEFT\n",
    "%s has %d new files": "%s HAS %d NEW FILES",
    "Hello %(name)s, you have %(count)d new messages": "HELLO %(name)s, YOU HAVE %(count)d NEW MESSAGES",
    "Saved {0} of {total} files": "SAVED {0} OF {total} FILES",
    "_Open": "_OPEN",
    "&Save": "&SAVE",
    "Save _As…": "_SAVE AS…",  # the marker goes before the first letter of the translation
    "1. _First": "1. _FIRST",
    "Tom &amp; Jerry & friends": "TOM &AMP; JERRY & FRIENDS",  # neither "&" is an accelerator
    "First line\n  second line, indented\n": "FIRST LINE\n  SECOND LINE, INDENTED\n",
    "Open": "OPEN",
    "Quit": "Beenden",  # already translated: untouched
}


class Uppercase:
    """A translator that upper-cases what it is given and remembers every line it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, lines: list[str]) -> list[str]:
        self.seen += lines
        return [line.upper() for line in lines]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def msgfmt_check(path: Path) -> None:
    done = subprocess.run(["msgfmt", "--check", "-o", os.devnull, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_po_file_is_translated_with_placeholders_accelerators_and_plurals_kept(tmp_path):
    src, out = write(tmp_path / "demo.po", HEADER + ENTRIES), tmp_path / "out" / "pl.po"
    translator = Uppercase()
    result = translate_po(src, out, translator, key="upper en->pl", batch_size=4)

    assert result == PoResult(translated=13, fuzzy=0, kept=2)  # "Quit" and the obsolete "Old" kept
    catalogue = polib.pofile(str(out))
    assert {e.msgid: e.msgstr for e in catalogue if not e.msgid_plural and not e.obsolete} == EXPECTED
    plural = catalogue.find("%d file was deleted")
    assert plural.msgstr_plural == {
        0: "%d FILE WAS DELETED",
        1: "%d FILES WERE DELETED",
        2: "%d FILES WERE DELETED",
    }  # nplurals=3 from the header
    assert [e.msgid for e in catalogue.obsolete_entries()] == ["Old"]
    assert catalogue.metadata["Plural-Forms"].startswith("nplurals=3;") and catalogue.metadata["Language"] == "pl"
    msgfmt_check(out)
    # The translator saw natural text: placeholders masked as {n}, no accelerator, no surrounding whitespace; and
    # "Copying %s to %s…"-like lines each once, even where a line comes back in another entry (form 1 and 2).
    assert "Hello {0}, you have {1} new messages" in translator.seen and "Open" in translator.seen
    assert "second line, indented" in translator.seen and "{0} files were deleted" in translator.seen
    assert not any(re.search(r"[%_&]|^\s|\s$", line) for line in translator.seen if "&amp;" not in line)
    assert len(translator.seen) == len(set(translator.seen))
    assert sorted(p.name for p in out.parent.iterdir()) == ["pl.po"]  # no partial or temporary file left


def test_a_pot_template_gets_a_valid_header(tmp_path):
    pot = write(
        tmp_path / "demo.pot",
        r"""# SOME DESCRIPTIVE TITLE.
#, fuzzy
msgid ""
msgstr ""
"Project-Id-Version: demo 1.0\n"
"Language: \n"
"MIME-Version: 1.0\n"
"Content-Type: text/plain; charset=CHARSET\n"
"Content-Transfer-Encoding: 8bit\n"
"Plural-Forms: nplurals=INTEGER; plural=EXPRESSION;\n"

#, c-format
msgid "One window"
msgid_plural "%d windows"
msgstr[0] ""
msgstr[1] ""

msgid "_Open"
msgstr ""
""",
    )
    words = {"One window": "Ein Fenster", "{0} windows": "{0} Fenster", "Open": "Öffnen"}
    out = tmp_path / "de.po"
    result = translate_po(pot, out, lambda lines: [words[line] for line in lines], key="dict en->de", language="de")

    assert result == PoResult(translated=2, fuzzy=0, kept=0)
    catalogue = polib.pofile(str(out))
    assert catalogue.metadata["Content-Type"] == "text/plain; charset=UTF-8"
    assert catalogue.metadata["Plural-Forms"] == "nplurals=2; plural=(n != 1);"
    assert catalogue.metadata["Language"] == "de" and catalogue.metadata["Project-Id-Version"] == "demo 1.0"
    assert catalogue.find("_Open").msgstr == "_Öffnen"
    assert catalogue.find("One window").msgstr_plural == {0: "Ein Fenster", 1: "%d Fenster"}
    assert "Öffnen" in out.read_text(encoding="utf-8")  # UTF-8, not escaped
    msgfmt_check(out)


def test_a_lost_placeholder_is_retried_between_the_placeholders(tmp_path):
    src, out = write(tmp_path / "demo.po", HEADER + ENTRIES), tmp_path / "pl.po"
    seen: list[str] = []

    def drops_the_second(lines: list[str]) -> list[str]:
        seen.extend(lines)
        return [line.upper().replace("{1}", "") for line in lines]

    result = translate_po(src, out, drops_the_second, key="broken en->pl")

    catalogue = polib.pofile(str(out))
    assert result == PoResult(translated=13, fuzzy=0, kept=2)
    assert catalogue.find("Copying %s to %s…").msgstr == "COPYING %s TO %s…"
    assert catalogue.find("Hello %(name)s, you have %(count)d new messages").msgstr == (
        "HELLO %(name)s, YOU HAVE %(count)d NEW MESSAGES"
    )
    assert catalogue.find("%1$s has %2$d%% left\n").msgstr == "%1$s HAS %2$d%% LEFT\n"
    # The retry sent the text between placeholders, piece by piece: nothing there to lose.
    assert {"Copying", "to", "Hello", ", you have", "new messages", "has", "left"} <= set(seen)
    msgfmt_check(out)


def test_only_placeholders_that_say_which_value_they_take_may_move(tmp_path):
    src, out = write(tmp_path / "demo.po", HEADER + ENTRIES), tmp_path / "pl.po"

    def swaps(lines: list[str]) -> list[str]:  # as a translation into another word order would
        return [re.sub(r"\{([01])\}", lambda m: "{%d}" % (1 - int(m[1])), line.upper()) for line in lines]

    assert translate_po(src, out, swaps, key="swap en->pl") == PoResult(translated=13, fuzzy=0, kept=2)
    catalogue = polib.pofile(str(out))
    # %s … %d take the program's values in turn: swapped, each would show the other's; the retry keeps the order.
    assert catalogue.find("%s has %d new files").msgstr == "%s HAS %d NEW FILES"
    assert catalogue.find("Hello %(name)s, you have %(count)d new messages").msgstr == (
        "HELLO %(count)d, YOU HAVE %(name)s NEW MESSAGES"
    )
    assert catalogue.find("Saved {0} of {total} files").msgstr == "SAVED {total} OF {0} FILES"
    msgfmt_check(out)


@pytest.mark.parametrize(
    "broken",
    [
        lambda lines: ["" for _ in lines],  # nothing comes back
        lambda lines: [line.upper() + " %d" for line in lines],  # a placeholder the msgid does not have
    ],
    ids=["empty", "invented placeholder"],
)
def test_what_the_retry_cannot_mend_is_left_empty_and_fuzzy(tmp_path, broken):
    src, out = write(tmp_path / "demo.po", HEADER + ENTRIES), tmp_path / "pl.po"
    result = translate_po(src, out, broken, key="broken en->pl")

    assert result == PoResult(translated=0, fuzzy=13, kept=2)
    catalogue = polib.pofile(str(out))
    for entry in catalogue:
        if entry.msgid != "Quit" and not entry.obsolete:
            assert entry.fuzzy and not entry.msgstr and not any(entry.msgstr_plural.values()), entry.msgid
    assert catalogue.find("Quit").msgstr == "Beenden" and not catalogue.find("Quit").fuzzy
    msgfmt_check(out)


@pytest.mark.parametrize(
    "damage, line",
    [
        ('msgid "Open"\nmsgstr "Open\n', 7),  # an unterminated string (polib alone would read it as closed)
        ('msgid "Open"\nmsgstr ""\n\nOpen it\n', 9),  # a line that is no part of a .po
    ],
)
def test_a_damaged_po_file_is_refused_with_its_line_number(tmp_path, damage, line):
    src = write(
        tmp_path / "bad.po",
        """msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"

#: main.c:12
"""
        + damage,
    )
    out = tmp_path / "out" / "pl.po"
    with pytest.raises(TweetyError) as refused:
        translate_po(src, out, Uppercase(), key="upper en->pl")

    assert refused.value.line == line and f"bad.po:{line}:" in str(refused.value)
    assert "damaged" in str(refused.value) and refused.value.fix
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no output, no partial file


def test_a_killed_run_resumes_with_the_lines_it_had_not_done(tmp_path):
    entries = "".join(
        f'\nmsgid "Message number {word}"\nmsgstr ""\n' for word in ["one", "two", "three", "four", "five", "six"]
    )
    src, out = write(tmp_path / "demo.po", HEADER + entries), tmp_path / "pl.po"
    fresh = Uppercase()
    translate_po(src, tmp_path / "fresh.po", fresh, key="upper en->pl")

    calls = 0

    def dies_after_two(lines: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise KeyboardInterrupt  # Ctrl-C, or the process killed
        return [line.upper() for line in lines]

    with pytest.raises(KeyboardInterrupt):
        translate_po(src, out, dies_after_two, key="upper en->pl")
    assert not out.exists() and (tmp_path / ".pl.po.partial").exists()

    resumed = Uppercase()
    assert translate_po(src, out, resumed, key="upper en->pl") == PoResult(translated=6, fuzzy=0, kept=0)
    assert resumed.seen == fresh.seen[2:]  # only the four lines not done before
    assert out.read_bytes() == (tmp_path / "fresh.po").read_bytes()
    assert not (tmp_path / ".pl.po.partial").exists()
    msgfmt_check(out)


def test_an_existing_output_is_never_overwritten_unless_asked(tmp_path):
    src = write(tmp_path / "demo.po", HEADER + ENTRIES)
    out = write(tmp_path / "pl.po", "mine\n")
    with pytest.raises(TweetyError, match="never overwrites"):
        translate_po(src, out, Uppercase(), key="upper en->pl")
    assert out.read_text(encoding="utf-8") == "mine\n"

    assert translate_po(src, out, Uppercase(), key="upper en->pl", overwrite=True).translated == 13
    msgfmt_check(out)


def test_is_po_tells_catalogues_from_text_files():
    assert is_po("app/de.po") and is_po(Path("messages.POT"))
    assert not is_po("corpus.txt") and not is_po("po")


def test_a_text_file_resumes_after_a_torn_last_line(tmp_path):
    lines = ["one", "", "two", "three", "four"]
    out = tmp_path / "out.txt"
    partial = tmp_path / ".out.txt.partial"
    done: list[str] = []

    def dies_after_three(batch: list[str]) -> list[str]:
        if len(done) == 3:
            raise KeyboardInterrupt
        done.extend(batch)
        return [line.upper() for line in batch]

    with pytest.raises(KeyboardInterrupt):
        translate_lines_to_file(lines, dies_after_three, out, key="upper")
    with open(partial, "a", encoding="utf-8") as log:
        log.write('"TH')  # a write cut short by the kill
    counted = Uppercase()
    assert translate_lines_to_file(lines, counted, out, key="upper") == 5
    assert counted.seen == ["three", "four"]
    assert out.read_text(encoding="utf-8") == "ONE\n\nTWO\nTHREE\nFOUR\n" and not partial.exists()
