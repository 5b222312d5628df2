"""The wizard's pages, in the order the step list shows them. Each one gathers settings, calls one `Project` method
through its `Context` (`app.context`), and shows the result; the work itself lives in `core`."""
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

PAGES = (ProjectPage, SourcePage, DataPage, TokenizerPage, AlignPage, FineTunePage, EvaluatePage, ExportPage,
         ChatPage)

__all__ = ["PAGES", "Page"]
