"""The user's guide inside the app: docs/*.md in Qt's Markdown text browser, links between the guide's pages followed
in place (a link to the web opens the browser). The guide ships in every bundle (packaging/tweety-studio.spec), in
the same place relative to this module as in a source checkout, so Help works without a desktop launcher."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QDialog, QHBoxLayout, QPushButton, QTextBrowser, QVBoxLayout, QWidget

DOCS = Path(__file__).resolve().parent.parent / "docs"
START = "wizard.md"  # Help opens at the wizard's page; Contents leads to the rest


class GuideDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, page: str = START):
        super().__init__(parent)
        self.setWindowTitle("Tweety Studio — user's guide")
        self.resize(1100, 760)  # the guide's screenshots are 1280 px wide
        self.browser = QTextBrowser()
        self.browser.setOpenLinks(True)
        self.browser.setOpenExternalLinks(False)
        self.browser.anchorClicked.connect(self._follow)
        self.browser.setSearchPaths([str(DOCS)])
        back, contents, close = QPushButton("Back"), QPushButton("Contents"), QPushButton("Close")
        back.clicked.connect(self.browser.backward)
        self.browser.backwardAvailable.connect(back.setEnabled)
        back.setEnabled(False)
        contents.clicked.connect(lambda: self.show_page("README.md"))
        close.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addWidget(back), buttons.addWidget(contents), buttons.addStretch(1), buttons.addWidget(close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addLayout(buttons)
        self.show_page(page)

    def show_page(self, name: str) -> None:
        path = DOCS / name
        if path.is_file():
            self.browser.setSource(QUrl.fromLocalFile(str(path)))
        else:  # a damaged installation: say so instead of an empty window
            self.browser.setMarkdown(
                f"The user's guide is missing from this installation ({path}). Reinstall "
                "Tweety Studio, or read it online where you downloaded it."
            )

    def _follow(self, url: QUrl) -> None:
        if url.scheme() in ("http", "https", "mailto"):
            self.browser.setSource(self.browser.source())  # stay on the page; the web opens outside
            QDesktopServices.openUrl(url)
