"""Frozen entry point of the ``synopsis`` command; with no command it opens the window."""

import multiprocessing
import sys

from synopsis.engine.cli import main

if __name__ == "__main__":
    # torch and the tokenizers may start worker processes, which re-run this
    # executable; freeze_support() turns those runs into workers.
    multiprocessing.freeze_support()
    sys.exit(main())
