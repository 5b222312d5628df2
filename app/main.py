"""`tweety-studio`: start the desktop wizard."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

ICON = Path(__file__).resolve().parent.parent / "resources" / "icons" / "tweety-studio.png"


def main() -> int:
    # The PyPI aligners run in a spawned child process; a frozen (packaged) app must not start a second GUI in it.
    multiprocessing.freeze_support()
    if "--self-test" in sys.argv[1:]:
        from app import selftest

        return selftest.run()
    from app.window import SETTINGS, MainWindow
    from app.workers import collect_garbage_on_gui_thread
    from core.errors import TweetyError, quiet_developer_warnings

    quiet_developer_warnings("--verbose" in sys.argv[1:])

    app = QApplication.instance() or QApplication(sys.argv)
    collector = collect_garbage_on_gui_thread()  # noqa: F841 - lives as long as the application
    app.setApplicationName("Tweety Studio")
    app.setWindowIcon(QIcon(str(ICON)))
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
