"""PyInstaller entry point of the desktop app (`tweety-studio`, also `tweety-studio --self-test`)."""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
