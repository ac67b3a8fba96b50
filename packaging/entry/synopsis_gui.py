"""Frozen entry point of the windowed launcher (Windows Start menu, macOS .app).

Every argument is a document to open: Explorer's "Open with" and Finder pass
file paths, never ``synopsis`` commands.
"""

import multiprocessing
import sys

from synopsis.engine.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main(["gui", *sys.argv[1:]]))
