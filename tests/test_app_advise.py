"""Issue 30 in the wizard: “Is adapting worth it?” on the Language & data page measures the chosen source model on
the user's text before anything is adapted, and says keep, extend or replace with its numbers."""

from __future__ import annotations

from conftest import write_lines
from test_advise import UKRAINIAN
from test_app import wait_job, window  # noqa: F401 - `window` is a fixture
from test_first_run import button

from core.resources import read_text


def test_the_data_page_advises_before_adapting(qtbot, window, tmp_path):
    w = window
    w.new_project(tmp_path / "proj")
    w.go("data")
    page = w.pages["data"]
    button(page, "Is adapting worth it?").click()  # no text chosen yet: a sentence, no job
    assert not w.busy and "target-language text first" in page.error.text()

    page.rows["target"].set_path(write_lines(tmp_path / "uk.txt", UKRAINIAN.splitlines()))
    w.resize(1280, 600)  # the page is taller than the window: the answer must be scrolled into view
    button(page, "Is adapting worth it?").click()
    wait_job(qtbot, w)

    def in_sight() -> bool:
        return page.visibleRegion().contains(page.advice.mapTo(page, page.advice.rect().bottomLeft()))

    qtbot.waitUntil(in_sight, timeout=2000)  # scrolled once the layout has made room for the answer
    shown = page.advice.text()
    assert "Replace its vocabulary" in shown and "tokens a character" in shown, shown
    assert f"{len(read_text(tmp_path / 'uk.txt')):,} characters" in shown and not page.error.text()
    assert "data" not in w.project.state.stages  # advice records nothing
