"""`tweety-studio`: start the desktop wizard."""
from __future__ import annotations

import multiprocessing
import sys

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication


def main() -> int:
    # Alignment runs in a spawned child process; a frozen (packaged) app must not start a second GUI in it.
    multiprocessing.freeze_support()
    from app.window import SETTINGS, MainWindow
    from core.errors import TweetyError

    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("Tweety Studio")
    window = MainWindow()
    last = QSettings(*SETTINGS).value("last_project")
    if last:
        try:  # reopening the last project is a convenience: a moved or deleted folder is not an error
            window.open_project(last)
        except TweetyError as e:
            window.log(f"Could not reopen the last project: {e}")
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
