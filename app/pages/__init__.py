"""The wizard's pages, in the order the step list shows them. Each one gathers settings, calls one `Project` method
through its `Context` (`app.context`), and shows the result; the work itself lives in `core`."""

from dataclasses import dataclass

from app.pages.align import AlignPage
from app.pages.chat import ChatPage
from app.pages.data import DataPage
from app.pages.evaluate import EvaluatePage
from app.pages.export import ExportPage
from app.pages.finetune import FineTunePage
from app.pages.project import ProjectPage
from app.pages.source import SourcePage
from app.pages.tokenizer import TokenizerPage
from app.pages.widgets import Page

PAGES = (ProjectPage, SourcePage, DataPage, TokenizerPage, AlignPage, FineTunePage, EvaluatePage, ExportPage, ChatPage)


@dataclass(frozen=True)
class Step:
    """A wizard step's place among the project's stages (core.layout.STAGES)."""

    page: str  # the page's key
    runs: tuple[str, ...]  # the stages it runs, and the `tweety` commands that run them (core's fixes name these)
    done: str = ""  # the stage whose record marks the step done ("": none does)
    needs: str = ""  # the stage that must be recorded before the step can run ("": nothing)


# The one stage ↔ page table: where a reopened project resumes, which steps are done or wait for an earlier one, and
# which step a core message's `tweety …` command is in the wizard all read it (a second table once drifted from it).
STEPS = (
    Step("data", ("data",), done="data"),
    Step("tokenizer", ("tokenizer",), done="tokenizer", needs="data"),
    Step("align", ("align", "map", "init", "adapt"), done="init", needs="tokenizer"),
    Step("finetune", ("finetune",), done="finetune", needs="init"),
    Step("evaluate", ("evaluate", "eval"), done="evaluate", needs="init"),
    Step("export", ("export",), done="export", needs="init"),
    Step("chat", (), needs="init"),
)


def step_of(page: str) -> Step | None:
    return next((s for s in STEPS if s.page == page), None)


def page_of(stage: str | None) -> str:
    """The page that runs `stage`; the Chat page once no stage is left (None)."""
    return next((s.page for s in STEPS if stage in s.runs), "chat")


__all__ = ["PAGES", "STEPS", "Page", "Step", "page_of", "step_of"]
