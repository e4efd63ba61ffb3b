"""`python -m toybench ...` is the same as the `toybench` console script."""

import sys

from toybench.cli import main

sys.exit(main())
