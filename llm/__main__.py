"""``python -m llm ...``: see :mod:`llm.cli`."""

import sys

from llm.cli import main

if __name__ == "__main__":
    sys.exit(main())
