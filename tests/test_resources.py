"""Readers: every supported format round-trips, every malformed input gets one clear error naming file and line."""

from __future__ import annotations

import gzip
import unicodedata

import pytest

from core.errors import TweetyError
from core.resources import read_dictionary, read_lines, read_parallel

TMX = """<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4"><header srclang="en"/><body>
<tu><tuv xml:lang="en"><seg>The house</seg></tuv><tuv xml:lang="es"><seg>La casa</seg></tuv></tu>
<tu><tuv xml:lang="en"><seg>The <b>king</b></seg></tuv><tuv xml:lang="es"><seg>El rey</seg></tuv></tu>
</body></tmx>"""


def test_moses_pair_with_bom_nfc_crlf_and_gzip(tmp_path):
    decomposed = unicodedata.normalize("NFD", "él está")
    (tmp_path / "a.en").write_bytes(b"\xef\xbb\xbfHe is\r\nHouse\r\n")
    with gzip.open(tmp_path / "a.es.gz", "wt", encoding="utf-8") as f:
        f.write(f"{decomposed}\nCasa\n")
    corpus = read_parallel(tmp_path / "a.en", tmp_path / "a.es.gz")
    assert corpus.source == ["He is", "House"]
    assert corpus.target == ["él está", "Casa"]
    assert corpus.target[0] != decomposed and len(corpus.target[0]) == 7  # NFC: composed characters


def test_tsv_and_tmx_corpora(tmp_path):
    (tmp_path / "c.tsv").write_text("the house\tla casa\n\nthe king\tel rey\n")
    (tmp_path / "c.tmx").write_text(TMX)
    assert read_parallel(tmp_path / "c.tsv").target == ["la casa", "el rey"]
    tmx = read_parallel(tmp_path / "c.tmx")
    assert tmx.source == ["The house", "The king"] and tmx.target == ["La casa", "El rey"]


def test_dictionaries_tsv_csv_weights_tmx(tmp_path):
    (tmp_path / "d.tsv").write_text("# comment\nhouse\tcasa\t2.5\nking\trey\n")
    (tmp_path / "d.csv").write_text('house,casa\n"water, fresh",agua dulce,0.5\n')
    (tmp_path / "d.tmx").write_text(TMX)
    tsv = read_dictionary(tmp_path / "d.tsv")
    assert [(e.source, e.target, e.weight) for e in tsv] == [("house", "casa", 2.5), ("king", "rey", 1.0)]
    csv = read_dictionary(tmp_path / "d.csv")
    assert (csv[1].source, csv[1].target, csv[1].weight) == ("water, fresh", "agua dulce", 0.5)
    assert read_dictionary(tmp_path / "d.tmx")[1].target == "El rey"


def _b64(n: int) -> str:
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = digits[n % 64] + out
        n //= 64
        if n == 0:
            return out


def test_freedict_dictd(tmp_path):
    entries = [
        "00-database-info\nA test dictionary\n",
        "house /haus/\n1. casa, hogar\n2. vivienda (edificio)\n",
        "king /kɪŋ/\nrey\n",
    ]
    body, index, offset = b"", [], 0
    for text in entries:
        data = text.encode()
        index.append(f"{text.split()[0]}\t{_b64(offset)}\t{_b64(len(data))}")
        body += data
        offset += len(data)
    (tmp_path / "eng-spa.index").write_text("\n".join(index) + "\n")
    (tmp_path / "eng-spa.dict.dz").write_bytes(gzip.compress(body))
    got = [(e.source, e.target) for e in read_dictionary(tmp_path / "eng-spa.index")]
    assert got == [("house", "casa"), ("house", "hogar"), ("house", "vivienda"), ("king", "rey")]
    (tmp_path / "eng-spa.dict.dz").unlink()
    with pytest.raises(TweetyError, match="needs both the .index and the .dict"):
        read_dictionary(tmp_path / "eng-spa.index")


@pytest.mark.parametrize(
    "name, content, reader, message, line",
    [
        ("bad.txt", b"ok line\nol\xc3\xa9 \xe9 bad\n", "lines", "not valid UTF-8", 2),
        ("empty.txt", b"\n  \n", "lines", "the file is empty", None),
        ("bin.txt", b"PK\x03\x04\x00\x00binary", "lines", "binary file", None),
        ("long.txt", b"short\n" + b"a" * (1024 * 1024 + 1) + b"\n", "lines", "limit is 1 MiB", 2),
        ("one.tsv", b"house\tcasa\nking\n", "dictionary", "has 1 column", 2),
        ("three.tsv", b"a\tb\tc\td\n", "dictionary", "has 4 columns", 1),
        ("weight.tsv", b"house\tcasa\tmany\n", "dictionary", "not a positive number", 1),
        ("broken.tmx", b"<tmx><body><tu><tuv xml:lang='en'><seg>a</seg></tuv>", "corpus", "not valid TMX", None),
        ("gz.txt.gz", b"\x1f\x8b\x08\x00garbage", "lines", "compressed file is damaged", None),
    ],
)
def test_malformed_inputs_name_file_and_line(tmp_path, name, content, reader, message, line):
    path = tmp_path / name
    path.write_bytes(content)
    read = {"lines": read_lines, "dictionary": read_dictionary, "corpus": read_parallel}[reader]
    with pytest.raises(TweetyError, match=message) as info:
        read(path)
    assert str(path) in str(info.value)
    if line is not None:
        assert info.value.line == line and f"{path}:{line}:" in str(info.value)
    assert info.value.fix  # every error says what to do


def test_mismatched_line_counts(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n")
    (tmp_path / "a.es").write_text("uno\ndos\n")
    with pytest.raises(TweetyError, match="has 3 lines but a.es has 2"):
        read_parallel(tmp_path / "a.en", tmp_path / "a.es")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(TweetyError, match="file not found"):
        read_lines(tmp_path / "nope.txt")
    with pytest.raises(TweetyError, match="folder"):
        read_lines(tmp_path)
