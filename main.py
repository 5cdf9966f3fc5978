"""SMART Studio: `uv run main.py [FILE.mid|PROJECT.smartproj] [--screenshot PNG]`."""

import sys

from studio.app import main

if __name__ == "__main__":
    sys.exit(main())
