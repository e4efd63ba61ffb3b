"""Verifiable contextual tasks shared by the tiny transformer (``toybench``) and ``llm``.

Pure Python (no torch), so ``llm`` can import it without pulling the toy trainers.
The public names are those of ``toybench.tasks.arith`` (its ``__all__``).
"""

from toybench.tasks import arith
from toybench.tasks.arith import *  # noqa: F403  (re-export: the names listed in arith.__all__)

__all__ = list(arith.__all__)
