"""Frozen entry point of ``synopsis-smoke``, the test driver that packaging/smoke_gui.py defines."""

import sys

from smoke_gui import main

if __name__ == "__main__":
    sys.exit(main())
