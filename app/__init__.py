"""Tweety Studio desktop wizard (PySide6). Imports `core`, never the reverse. The wizard is the next issue."""
