"""Verifiable contextual tasks shared by the tiny transformer (``toybench``) and ``llm``.

Pure Python (no torch), so ``llm`` can import it without pulling the toy trainers.
"""

from toybench.tasks.arith import (
    ALPHABET,
    CharTokenizer,
    Puzzle,
    Verdict,
    all_solutions,
    expert_solution,
    extract_answer,
    format_prompt,
    generate_puzzles,
    pretraining_corpus,
    split_puzzles,
    verify,
)

__all__ = [
    "ALPHABET",
    "CharTokenizer",
    "Puzzle",
    "Verdict",
    "all_solutions",
    "expert_solution",
    "extract_answer",
    "format_prompt",
    "generate_puzzles",
    "pretraining_corpus",
    "split_puzzles",
    "verify",
]
