"""Failures people meet on their own machines end in one plain line, and leave nothing behind: every command writing
onto a real, full file system (a small tmpfs this test mounts; skipped with the reason where mounting is not
allowed), damaged and empty input files, and no developer warnings on a user's screen."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import demo_lines, write_lines
from core.errors import TweetyError, plain_os_error


def tweety(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *map(str, args)], capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """A 4 MB tmpfs; each test fills it (leaving `free` bytes) and it is emptied afterwards."""
    mount = tmp_path_factory.mktemp("disk")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'mount failed'}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path, free: int = 0) -> Path:
    """Fill the disk, leaving about `free` bytes."""
    for f in disk.iterdir():
        shutil.rmtree(f) if f.is_dir() else f.unlink()
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: closing must not flush into the full disk again
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - free))
    return filler


@pytest.fixture(scope="module")
def files(module_tmp, pairs):
    d = module_tmp("inputs")
    en, es = pairs
    write_lines(d / "en.txt", en[:200])
    write_lines(d / "es.txt", es[:200])
    (d / "dict.tsv").write_text("God\tDios\nearth\ttierra\n")
    return d


@pytest.fixture(scope="module")
def project(files, module_tmp):
    out = module_tmp("project") / "p"
    r = tweety(
        "adapt",
        "--target-text",
        files / "es.txt",
        "--parallel",
        files / "en.txt",
        files / "es.txt",
        "--vocab-size",
        600,
        "--language",
        "es",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr and "warning" not in r.stderr.lower(), r.stderr  # nothing a user can't act on
    return out


def _refused(r: subprocess.CompletedProcess, disk: Path, filler: Path) -> None:
    lines = [line for line in r.stderr.splitlines() if line.strip() and "%|" not in line and "it/s]" not in line]
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and lines[-1].startswith("error:"), r.stderr
    assert "disk is full" in lines[-1] or "disk is too full" in lines[-1], r.stderr  # failed, or refused up front
    assert sorted(disk.iterdir()) == [filler], sorted(disk.iterdir())  # no folder, no marker, no temp file


def test_every_command_on_a_full_disk_says_so_and_leaves_nothing(disk, files, project):
    """No space at all: the small writers fail at once, the large ones (model, checkpoint, GGUF) are refused up
    front with what they need and what is free."""
    model, work = project / "model", project / "work"
    commands = {
        "adapt": (
            "adapt",
            "--target-text",
            files / "es.txt",
            "--parallel",
            files / "en.txt",
            files / "es.txt",
            "--vocab-size",
            600,
            "--out",
            disk / "out",
        ),
        "tokenizer": ("tokenizer", "--target-text", files / "es.txt", "--vocab-size", 600, "--out", disk / "out"),
        "align": (
            "align",
            "--tokenizer",
            work / "tokenizer",
            "--parallel",
            files / "en.txt",
            files / "es.txt",
            "--out",
            disk / "out",
        ),
        "map": ("map", "--tokenizer", work / "tokenizer", "--alignment", work / "alignment", "--out", disk / "out"),
        "init": ("init", "--tokenizer", work / "tokenizer", "--mapping", work / "mapping", "--out", disk / "out"),
        "finetune": (
            "finetune",
            "--model",
            model,
            "--text",
            files / "es.txt",
            "--steps",
            2,
            "--block-size",
            32,
            "--batch-size",
            2,
            "--out",
            disk / "out",
        ),
        "export": ("export", "--model", model, "--out", disk / "out.gguf", "--type", "q8_0"),
    }
    for args in commands.values():
        filler = fill(disk, 0)
        _refused(tweety(*args), disk, filler)


def test_translation_to_a_full_disk_and_the_hydra_export(disk, files, project, tmp_path):
    model = project / "model"
    gguf = tmp_path / "model.gguf"
    assert tweety("export", "--model", model, "--out", gguf, "--type", "q8_0").returncode == 0
    hydra = tmp_path / "hydra"
    assert tweety("hydra", "build", "--language", f"es={model}", "--out", hydra).returncode == 0
    filler = fill(disk, 0)
    _refused(tweety("hydra", "export", "--hydra", hydra, "--out", disk / "hydra.gguf"), disk, filler)
    lines = write_lines(tmp_path / "in.en", ["And God said.", "And it was so."])
    filler = fill(disk, 0)
    _refused(
        tweety(
            "translate",
            "--gguf",
            gguf,
            "--from",
            "en",
            "--to",
            "es",
            "--threads",
            1,
            "--input",
            lines,
            "--output",
            disk / "out.es",
        ),
        disk,
        filler,
    )


def test_the_wizard_shows_the_same_line_in_its_dialog(qtbot, disk, files, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    from app.window import MainWindow
    from core import models, resources, tokenizer

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    window = MainWindow()
    shown = []
    monkeypatch.setattr(window, "show_warning", shown.append)
    qtbot.addWidget(window)
    filler = fill(disk, 0)
    source_tok, lines = models.load_tokenizer("default"), resources.read_lines(files / "es.txt")
    window.run_job(
        lambda progress, cancel: tokenizer.train_tokenizer(
            lines,
            source_tok,
            disk / "tok",
            tokenizer.TokenizerSettings(vocab_size=600),
            progress=progress,
            cancel=cancel,
        ),
        lambda result: None,
        name="Training the tokenizer",
    )
    qtbot.waitUntil(lambda: bool(shown), timeout=120_000)
    assert "disk is full" in shown[0] and "Traceback" not in shown[0]  # the tokenizer writes, then fails
    assert sorted(disk.iterdir()) == [filler]


def test_os_failures_are_named_in_plain_words():
    import errno

    full = plain_os_error(OSError(errno.ENOSPC, "No space left on device", "/data/out"))
    assert str(full).startswith("/data/out: the disk is full")
    assert "disk is full" in str(plain_os_error(OSError("884736 requested and 514960 written")))  # gguf-py
    assert "permission denied" in str(plain_os_error(PermissionError(errno.EACCES, "Permission denied", "/x")))
    assert "read-only" in str(plain_os_error(OSError(errno.EROFS, "Read-only file system", "/mnt/cd")))
    assert plain_os_error(ValueError("a bug")) is None and plain_os_error(OSError("other")) is None


def test_damaged_and_empty_inputs_get_their_message(tmp_path):
    from core.resources import read_dictionary, read_lines, read_parallel

    good = gzip.compress(("\n".join(demo_lines("bible.train.es.gz", 200)) + "\n").encode())
    (tmp_path / "cut.txt.gz").write_bytes(good[: len(good) // 2])
    damaged = bytearray(good)
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = b"\xff" * 64
    (tmp_path / "bad.dict.dz").write_bytes(bytes(damaged))
    (tmp_path / "bad.index").write_text("casa\tA\tB\n")
    for path, reader, named in (
        (tmp_path / "cut.txt.gz", read_lines, "cut.txt.gz"),
        (tmp_path / "bad.index", read_dictionary, "bad.dict.dz"),
    ):
        with pytest.raises(TweetyError, match="compressed file is damaged") as e:
            reader(path)
        assert str(e.value).startswith(str(tmp_path / named))
    (tmp_path / "empty.tmx").write_text(
        '<?xml version="1.0"?><tmx version="1.4"><header srclang="en"/><body></body></tmx>'
    )
    for reader in (read_dictionary, read_parallel):
        with pytest.raises(TweetyError, match="no translation units") as e:
            reader(tmp_path / "empty.tmx")
        assert "empty.tmx" in str(e.value)
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    with pytest.raises(TweetyError, match="blank.txt: the file is empty"):
        read_lines(tmp_path / "blank.txt")
    (tmp_path / "one-sided.tsv").write_text("God\t\n\tDios\n")
    with pytest.raises(TweetyError, match="no entry has both"):
        read_dictionary(tmp_path / "one-sided.tsv")


def test_a_gguf_that_outgrows_the_disk_is_removed(disk, project):
    """Past the up-front check: gguf-py reports the full disk as a short write (`… requested and … written`)."""
    from core.export import ExportSettings, export_gguf

    filler = fill(disk, 300_000)
    with pytest.raises(OSError) as failure:
        export_gguf(project / "model", disk / "model.gguf", ExportSettings(type="q8_0"))
    assert "disk is full" in str(plain_os_error(failure.value))
    assert sorted(disk.iterdir()) == [filler]


def test_a_finetuning_run_that_fills_the_disk_leaves_nothing(disk, files, project):
    """Past the up-front check (a run whose checkpoint outgrows the disk): the folder it created goes too."""
    from core import finetune, stages

    filler = fill(disk, 200_000)
    with pytest.raises(Exception) as failure, stages.finetuning_output(disk / "out", resume=False):
        finetune.finetune(
            project / "model",
            files / "es.txt",
            None,
            disk / "out",
            finetune.FinetuneSettings(steps=1, block_size=16, batch_size=1),
        )
    assert "disk is full" in str(plain_os_error(failure.value))
    assert sorted(disk.iterdir()) == [filler]
