"""The corpus-words lexicon's own reading of a line (core.lexicon): what it keeps whole."""

from __future__ import annotations

from core.lexicon import Lexicon, detokenize, tokens


def test_placeholders_are_copied_whole():
    """A program's placeholders pass through word by word translation as written: split, "%s" came back "% s"."""
    line = "Open %s and %(name)s in {0} or %1$d files, 100% sure"
    assert tokens(line)[:6] == ["Open", "%s", "and", "%(name)s", "in", "{0}"]
    assert "%" in tokens(line) and "sure" in tokens(line)  # a percent sign before a space is punctuation
    lexicon = Lexicon(
        {"open": ("Abrir", 1.0), "and": ("y", 1.0), "in": ("en", 1.0), "files": ("archivos", 1.0)},
        frozenset({"open", "and", "in", "or", "files", "sure"}),
    )
    assert lexicon.translate([line]) == ["Abrir %s y %(name)s en {0} %1$d archivos, 100%"]
    assert detokenize(tokens("Copy %s to %s.")) == "Copy %s to %s."
