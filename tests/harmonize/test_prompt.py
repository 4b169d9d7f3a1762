"""The empty-prompt embedding from a Stable Diffusion text_encoder/ + tokenizer/ (tiny CLIP here)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from simharmon.harmonize.models.prompt import empty_prompt_embeds
from simharmon.models.checkpoints import CheckpointError

transformers = pytest.importorskip("transformers")  # in the dev and harmonize extras


def _write_clip(root):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    (root / "tokenizer").mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(root / "tokenizer" / "vocab.json"), str(root / "tokenizer" / "merges.txt"),
                              model_max_length=6)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2, max_position_embeddings=6, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1)
    model = CLIPTextModel(config).eval()
    model.save_pretrained(str(root / "text_encoder"))
    return model


def test_empty_prompt_embedding_matches_the_text_encoder(tmp_path):
    model = _write_clip(tmp_path)
    embeds = empty_prompt_embeds(tmp_path)
    with torch.no_grad():
        expected = model(torch.tensor([[0, 1, 1, 1, 1, 1]]))[0]  # BOS, EOS, then EOS padding
    assert embeds.shape == (1, 6, 16) and torch.allclose(embeds, expected, atol=1e-6)


def test_text_encoder_missing_key_is_named(tmp_path):
    _write_clip(tmp_path)
    path = next((tmp_path / "text_encoder").glob("*.safetensors"))
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("final_layer_norm.weight"))
    state.pop(key)
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="final_layer_norm.weight"):
        empty_prompt_embeds(tmp_path)


def test_no_text_encoder_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no text_encoder/ folder"):
        empty_prompt_embeds(tmp_path)
