"""Native work that never looks at the cancel token runs in a child process (core.jobs.run_in_child): cancelling it
ends the child — and its CPU use — at once, and leaves nothing written."""

from __future__ import annotations

import multiprocessing
import tempfile
import time

import psutil
import pytest
from conftest import demo_lines

from core.jobs import Cancelled, CancelToken, Progress
from core.models import load_tokenizer
from core.tokenizer import TokenizerSettings, train_tokenizer


def test_cancelled_tokenizer_training_stops_its_process_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the training's own files go
    (tmp_path / "tmp").mkdir()
    cancel, training, cancelled_at = CancelToken(), [], []

    def progress(p: Progress) -> None:
        if p.total is None and not cancelled_at:  # SentencePiece is training: the user presses Cancel
            training.extend(multiprocessing.active_children())
            cancelled_at.append(time.monotonic())
            cancel.cancel()

    lines = demo_lines("bible.train.es.gz", 3000)
    with pytest.raises(Cancelled):
        train_tokenizer(
            lines,
            load_tokenizer("default"),
            tmp_path / "tokenizer",
            TokenizerSettings(vocab_size=4000),
            progress=progress,
            cancel=cancel,
        )
    assert time.monotonic() - cancelled_at[0] < 5  # the kill, not the training's end (seconds more on 2 cores)
    assert len(training) == 1 and not any(psutil.pid_exists(p.pid) for p in training)  # it trained in a child: gone
    assert not multiprocessing.active_children()
    assert not (tmp_path / "tokenizer").exists() and not any((tmp_path / "tmp").iterdir())
