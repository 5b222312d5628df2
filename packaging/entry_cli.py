"""PyInstaller entry point of the command line (`tweety`)."""

import multiprocessing
import sys

from core.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the PyPI aligners run in a spawned child process
    sys.exit(main())
