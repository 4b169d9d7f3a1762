"""The empty prompt's text embedding, from a Stable Diffusion ``text_encoder/`` + ``tokenizer/``.

DiffHarmony samples with an empty prompt and guidance 1.0, so the UNet's cross-attention input is
one constant: CLIP's output for "" padded to the tokenizer's length. It is computed once here
(transformers is an optional dependency: ``pip install simharmon[harmonize]``), or read from a
``prompt_embeds.safetensors`` (see :func:`simharmon.harmonize.models.loading.save_prompt_embeds`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...models.checkpoints import CheckpointError

__all__ = ["empty_prompt_embeds"]

_SHOW = 8


def empty_prompt_embeds(root: str | Path) -> torch.Tensor:
    """``[1, L, D]`` float32: the text encoder's last hidden state for the empty prompt.

    root: a folder with ``text_encoder/`` (CLIPTextModel) and ``tokenizer/`` (CLIPTokenizer).
    Every text-encoder weight must load (missing / unexpected / wrong-shaped keys raise).
    """
    root = Path(root)
    for name in ("text_encoder", "tokenizer"):
        if not (root / name).is_dir():
            raise CheckpointError(f"{root}: no {name}/ folder to compute the empty-prompt embedding from")
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as exc:
        raise CheckpointError(
            f"{root}: computing the empty-prompt embedding from text_encoder/ needs transformers "
            "(pip install 'simharmon[harmonize]'), or put a prompt_embeds.safetensors beside unet/") from exc
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
        encoder, info = CLIPTextModel.from_pretrained(str(root / "text_encoder"), local_files_only=True,
                                                      output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{root}: cannot read text_encoder/ or tokenizer/: {exc}") from exc
    problems = {k: list(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    # CLIP's position_ids buffer is deterministic; old files carry it, new ones do not.
    for key in ("missing_keys", "unexpected_keys"):
        if key in problems:
            problems[key] = [k for k in problems[key] if not k.endswith("position_ids")]
            if not problems[key]:
                del problems[key]
    if problems:
        listing = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v[:_SHOW]))}" for k, v in problems.items())
        raise CheckpointError(f"{root / 'text_encoder'}: checkpoint does not match the model: {listing}")
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return encoder.eval()(ids)[0].float()
