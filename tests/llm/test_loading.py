"""The tiny model is saved in HF format and read back by the same loader used for real models."""

from __future__ import annotations

import pytest
import torch

from llm.loading import load_model, load_tokenizer, resolve_device


def test_tiny_roundtrip(tiny_dir):
    tok = load_tokenizer(str(tiny_dir))
    m = load_model(str(tiny_dir), "cpu")
    assert m.dtype == torch.float32 and m.config.model_type == "qwen3"
    assert (tiny_dir / "model.safetensors").is_file() and tok.chat_template
    text = tok.apply_chat_template(
        [{"role": "user", "content": "1 2>3:"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.decode(tok(text)["input_ids"]) == text


def test_missing_model_fails_clearly_offline(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_model("no-such-org/no-such-model-xyz", "cpu")


def test_cuda_device_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.gpu
def test_gpu_bf16_load(tiny_dir):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    m = load_model(str(tiny_dir), "cuda")  # fp32 master weights by default (bf16 autocast runs the forward)
    assert m.dtype == torch.float32 and m.device.type == "cuda"
    assert load_model(str(tiny_dir), "cuda", torch.bfloat16).dtype == torch.bfloat16
