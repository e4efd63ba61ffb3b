"""The LLM scale: the losses of ``toybench.losses`` on any Hugging Face causal LM (Qwen3-0.6B).

Loading (hub cache / local dir / the tiny preset), chat data and masks, the chunked-vocabulary
wrapper, SFT with every method, GRPO, evaluation, checkpoints, torchrun, and the CLI
(``python -m llm sft|grpo|eval|pipeline``). Submodules import transformers lazily where they can.
"""

from llm.chunked import chunked_per_token, full_per_token
from llm.config import EvalConfig, GRPOConfig, PipelineConfig, SFTConfig

__all__ = ["EvalConfig", "GRPOConfig", "PipelineConfig", "SFTConfig", "chunked_per_token", "full_per_token"]
