"""The training loop: the paper's single-step recipe on curated pairs and sequences.

Each step is ONE forward of the enhancer exactly as inference runs it (``runtime.stages.model_forward``,
the same stages the runtime composes): the clean latent of the input goes into the denoiser at the
fixed timestep, and decoded frame 0 is the output. Non-temporal steps have no references. Temporal
steps run a clip of T frames: frames 0..T-2 build the history without gradients, with the runtime's
own history stages (so references are exactly what inference would feed: quantized outputs,
re-encoded in the per-frame layout), then
frames T-2 and T-1 run together in one forward with gradients, and the warping loss ties their
outputs under the clip's flow. One forward per step keeps DDP's gradient hooks simple.

Determinism: batches and patch positions are a function of (seed, step, rank); checkpoints hold
weights, EMA, optimizer and step, so a resumed CPU run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..config import config_from_dict, config_to_dict
from ..eval.flow import RaftFlow
from ..io.atomic import atomic_path, atomic_write_json
from ..io.pixels import frame_to_model, model_to_frame
from ..models.checkpoints import load_torch_file
from ..models.enhancer import EnhancerModel, build_enhancer, export_safetensors
from ..ops import masked_blend_reference
from ..runtime.inputs import condition_mask as stream_condition_mask
from ..runtime.stages import (
    finish_output,
    gather_entries,
    history_capacity,
    model_forward,
    push_entries,
    reference_offsets,
    ring_entry,
)
from .config import TrainConfig, train_config_to_dict
from .data import ClipBatch, PairSet, SequenceSet
from .distributed import DistInfo, barrier, init_distributed, resolve_device, wrap_ddp
from .losses import VggPerceptual, foreground_l2_loss, l2_loss, temporal_warping_loss

__all__ = ["Trainer", "StepModule", "condition_mask", "export_checkpoint", "trainable_parameters"]

log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 1


class StepModule(nn.Module):
    """The enhancer's training forward as a module, so that DDP can wrap it."""

    def __init__(self, model: EnhancerModel):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, references: Optional[torch.Tensor],
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """image ``[B, 3, H, W]`` in [-1, 1]; references ``[B, K, ...]`` as ``stages.model_forward`` (or
        None); mask ``[B, 1, H, W]`` (the actor, for ``stream.mask_condition`` / ``region_latent``) ->
        decoded ``[B, 3, H, W]``.

        A colour-transform model (``stream.colour_transform``) with ``stream.region_pixel`` trains
        through the region limit as inference applies it: outside the mask the output is the input,
        so the coefficient grid is only asked to be right where it is used."""
        stream = self.model.config.stream
        output = model_forward(self.model, stream, image, references, mask=mask)[0]
        return region_limited(stream, output, image, mask)


def region_limited(stream, output: torch.Tensor, image: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Training's ``region_pixel`` for colour-transform models: ``output`` outside ``mask`` (plus the
    band) replaced by ``image`` (both model space), differentiably; other models' output unchanged."""
    if stream.colour_transform == "off" or not stream.region_pixel or mask is None:
        return output
    return masked_blend_reference(output, image.to(output.dtype), mask, stream.region_pixel_band)


def history_references(model: EnhancerModel, stream, images: Sequence[torch.Tensor],
                       masks: Sequence[torch.Tensor]) -> List[Optional[torch.Tensor]]:
    """Run ``images`` (model space, oldest first) as a stream; the references each next frame gets.

    Returns ``len(images) + 1`` entries: the references of frame t (None: a non-temporal step), the
    last one for the frame after ``images``. The history stages are the runtime's, so references
    are what inference feeds: outputs finished as inference finishes them (``finish_output``: guided
    filter, region limit, 8-bit levels), re-encoded in the per-frame layout.
    """
    ring, count, result = None, 0, []
    capacity = history_capacity(stream)
    for image, mask in zip(list(images) + [None], list(masks) + [None]):
        offsets = reference_offsets(stream, count)
        references = None
        if offsets:
            positions = torch.tensor([[o - 1 for o in offsets]] * ring.shape[0], device=ring.device)
            references = gather_entries(ring, positions)
        result.append(references)
        if image is None or not capacity:
            continue
        decoded, x0 = model_forward(model, stream, image, references, mask=mask)
        output = finish_output(stream, decoded, image.float() * 0.5 + 0.5, mask)
        entry = ring_entry(model, stream, frame_to_model(output, model.dtype), x0)
        ring = entry.unsqueeze(1).repeat(1, capacity, *([1] * (entry.dim() - 1))) if ring is None \
            else push_entries(ring, entry)  # fmt: skip
        count = min(count + 1, capacity)
    return result


def condition_mask(model: EnhancerModel, mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The DiT's mask input for pixel mask ``[B, 1, H, W]``, as ``StreamingEnhancer`` makes it."""
    return stream_condition_mask(model.config.stream, mask, model.config.tokenizer.spatial_compression)


def trainable_parameters(model: EnhancerModel, which: str) -> Dict[str, nn.Parameter]:
    """Named parameters that learn: "all", "dit", or "dit+decoder" (DiT, decoder and its 1x1 input conv)."""
    prefixes = {"all": ("",), "dit": ("denoiser.",),
                "dit+decoder": ("denoiser.", "tokenizer.decoder.", "tokenizer.conv2.")}[which]
    return {name: p for name, p in model.named_parameters() if name.startswith(prefixes)}


class Trainer:
    """Builds the model, data and losses of ``config`` and runs / checkpoints / exports training.

    progress: show a tqdm bar (rank 0). ``run()`` trains to ``config.steps``; ``resume(path)``
    first restores a checkpoint ("auto" = the newest in ``OUT/checkpoints`` if any).
    """

    def __init__(self, config: TrainConfig, progress: bool = True):
        self.config = config
        self.progress = progress
        self.dist: DistInfo = init_distributed()
        self.device = resolve_device(config.device, self.dist)
        self.autocast_dtype = None
        if config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda"):
            if self.device.type != "cuda":
                raise ValueError("precision bf16 needs a CUDA device (the CPU path trains in fp32)")
            self.autocast_dtype = torch.bfloat16
        model_config = config.enhancer_config()
        self.model = build_enhancer(model_config, weights=config.init_weights, device=self.device,
                                    dtype=torch.float32, seed=config.seed)
        self.model.train()
        self.params = trainable_parameters(self.model, config.trainable)
        for p in self.params.values():
            p.requires_grad_(True)
        self.forward = wrap_ddp(StepModule(self.model), self.dist, self.device)
        self.optimizer = torch.optim.AdamW(list(self.params.values()), lr=config.lr, betas=(0.9, 0.99), foreach=True,
                                           weight_decay=config.weight_decay)
        self.ema = {name: p.detach().clone() for name, p in self.params.items()}
        self.pairs = PairSet([config.manifest, *config.extra_manifests], "train")
        need_flow = config.flow_source == "data"
        self.sequences = (SequenceSet([config.temporal_manifest, *config.extra_temporal_manifests], "train",
                                      need_flow=need_flow) if config.temporal_manifest else None)
        self.perceptual = None
        if config.perceptual_weight > 0:
            self.perceptual = VggPerceptual.load(config.vgg_weights)
            if self.perceptual is not None:
                self.perceptual = self.perceptual.to(self.device)
        self.raft = None
        if self.sequences is not None and config.flow_source == "raft":

            self.raft = RaftFlow(config.raft_weights, device=str(self.device))
        self.out = Path(config.out)
        self.step = 0

    # -- schedule -------------------------------------------------------------------------------
    def is_temporal(self, step: int) -> bool:
        """Non-temporal pretraining, then every ``temporal_every``-th step temporal (needs sequences)."""
        if self.sequences is None or step < self.config.pretrain_steps:
            return False
        return (step - self.config.pretrain_steps) % self.config.temporal_every == 0

    def _rng(self, step: int, kind: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, step, self.dist.rank, kind])

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    # -- losses ---------------------------------------------------------------------------------
    def _image_losses(self, output: torch.Tensor, target: torch.Tensor, rng: np.random.Generator,
                      mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        losses = {"l2": l2_loss(output, target)}
        if self.config.foreground_weight > 0:
            losses["foreground"] = foreground_l2_loss(output, target, mask)
        if self.perceptual is not None:
            losses["perceptual"] = self.perceptual(output, target, rng, self.config.perceptual_patches,
                                                   (self.config.patch_min, self.config.patch_max))
        return losses

    def _total(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        weights = {"l2": self.config.l2_weight, "foreground": self.config.foreground_weight,
                   "perceptual": self.config.perceptual_weight,
                   "temporal": self.config.temporal_weight}
        return sum(weights[k] * v for k, v in losses.items())

    def _raft_flow(self, clip: ClipBatch, t: int):
        """(F_{t->t+1}, F_{t+1->t}) ``[B, 2, H, W]`` estimated by RAFT on the TARGET frames."""
        to_uint8 = lambda x: model_to_frame(x).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
        a, b = to_uint8(clip.targets[t]), to_uint8(clip.targets[t + 1])
        fw = np.stack([self.raft(x, y) for x, y in zip(a, b)])
        bw = np.stack([self.raft(y, x) for x, y in zip(a, b)])
        return torch.from_numpy(fw).permute(0, 3, 1, 2), torch.from_numpy(bw).permute(0, 3, 1, 2)

    def pair_losses(self, step: int) -> Dict[str, torch.Tensor]:
        """Losses of the non-temporal batch of ``step`` (no references)."""
        rng = self._rng(step, 0)
        batch = self.pairs.batch(rng, self.config.batch_size, self.config.crop, self.config.crop_on_mask)
        masks = batch.masks.to(self.device)
        with self._autocast():
            output = self.forward(batch.inputs.to(self.device), None, masks)
        return self._image_losses(output.float(), batch.targets.to(self.device), rng, masks)

    def clip_losses(self, step: int) -> Dict[str, torch.Tensor]:
        """Losses of the temporal batch of ``step``: history without gradients, last two frames with."""
        rng = self._rng(step, 1)
        frames = self.config.temporal_frames
        clip = self.sequences.batch(rng, self.config.batch_size, self.config.temporal_crop or self.config.crop, frames,
                                    self.config.crop_on_mask)
        inputs, masks = clip.inputs.to(self.device), clip.masks.to(self.device)
        stream = dataclasses.replace(self.model.config.stream, history="partial")
        with torch.no_grad(), self._autocast():
            refs = history_references(self.model, stream, [inputs[t] for t in range(frames - 1)],
                                      [masks[t] for t in range(frames - 1)])
        refs_a, refs_b = refs[frames - 2], refs[frames - 1]
        image = torch.cat([inputs[frames - 2], inputs[frames - 1]])
        pair_masks = torch.cat([masks[frames - 2], masks[frames - 1]])
        references = None if refs_a is None else torch.cat([refs_a, refs_b])
        with self._autocast():
            output = self.forward(image, references, pair_masks).float()
        out_a, out_b = output.chunk(2)
        targets = torch.cat([clip.targets[frames - 2], clip.targets[frames - 1]]).to(self.device)
        losses = self._image_losses(output, targets, rng, pair_masks)
        if clip.flow_fw is not None:
            flow_fw, flow_bw = clip.flow_fw[frames - 2], clip.flow_bw[frames - 2]
        else:
            flow_fw, flow_bw = self._raft_flow(clip, frames - 2)
        losses["temporal"] = temporal_warping_loss(out_a, out_b, flow_fw.to(self.device), flow_bw.to(self.device))
        return losses

    # -- one step ---------------------------------------------------------------------------------
    def train_step(self) -> Dict[str, float]:
        """Run step ``self.step`` (forward, backward, clip, AdamW, EMA) and advance; returns the loss values."""
        config, step = self.config, self.step
        temporal = self.is_temporal(step)
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else config.lr
        losses = self.clip_losses(step) if temporal else self.pair_losses(step)
        total = self._total(losses)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite loss at step {step}: { {k: float(v) for k, v in losses.items()} }")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), config.grad_clip)
        self.optimizer.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))  # short EMA memory early on
        with torch.no_grad():
            for name, p in self.params.items():
                self.ema[name].mul_(decay).add_(p.detach(), alpha=1 - decay)
        self.step += 1
        record = {"step": self.step, "kind": "temporal" if temporal else "pair", "loss": float(total.detach()),
                  **{k: float(v.detach()) for k, v in losses.items()}, "lr": self.optimizer.param_groups[0]["lr"]}
        return record

    # -- checkpoints ------------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def state_dict(self) -> dict:
        """Everything a bit-exact resume needs."""
        return {"version": CHECKPOINT_VERSION, "step": self.step, "model": self.model.state_dict(),
                "ema": self.ema, "optimizer": self.optimizer.state_dict(),
                "train_config": train_config_to_dict(self.config), "model_config": config_to_dict(self.model.config)}

    def save_checkpoint(self) -> Optional[Path]:
        """Write ``OUT/checkpoints/step_NNNNNNN.pt`` and ``latest.json`` atomically (rank 0 only).

        Only the newest ``keep_checkpoints`` step files are kept.
        """
        path = None
        if self.dist.is_main:
            path = self.checkpoint_dir / f"step_{self.step:07d}.pt"
            with atomic_path(path) as tmp:
                torch.save(self.state_dict(), tmp)
            atomic_write_json(self.checkpoint_dir / "latest.json", {"step": self.step, "path": path.name})
            for old in sorted(self.checkpoint_dir.glob("step_*.pt"))[:-self.config.keep_checkpoints]:
                old.unlink()  # only after latest.json points at the new one
        barrier(self.dist)
        return path

    def latest_checkpoint(self) -> Optional[Path]:
        """The newest checkpoint in ``OUT/checkpoints`` (from ``latest.json``), or None."""
        pointer = self.checkpoint_dir / "latest.json"
        if not pointer.is_file():
            return None
        return self.checkpoint_dir / json.loads(pointer.read_text())["path"]

    def resume(self, path: str | Path = "auto") -> bool:
        """Restore a checkpoint ("auto": the newest, if any). Returns whether one was loaded."""
        target = self.latest_checkpoint() if str(path) == "auto" else Path(path)
        if target is None:
            return False
        if not target.is_file():
            raise FileNotFoundError(f"checkpoint not found: {target}")
        state = _training_state(target)
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{target}: unsupported checkpoint version {state.get('version')}")
        # Parsed, not compared as dicts: options added since the checkpoint take their defaults.
        if config_from_dict(state["model_config"]) != self.model.config:
            raise ValueError(f"{target} was trained with a different model config; refusing to resume")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        missing = set(self.ema) ^ set(state["ema"])
        if missing:
            raise ValueError(f"{target}: EMA parameters differ from this run's trainable set ({sorted(missing)[:3]})")
        for name, value in state["ema"].items():
            self.ema[name].copy_(value)
        self.step = int(state["step"])
        return True

    # -- export -----------------------------------------------------------------------------------
    def export(self, path: Optional[Path] = None, use_ema: bool = True) -> Path:
        """Write the (EMA) weights as simharmon safetensors with the config embedded."""
        path = Path(path) if path is not None else self.out / "model.safetensors"
        return _export(self.model.config, self.model.state_dict(), self.ema if use_ema else None, self.step,
                       train_config_to_dict(self.config), path)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, steps: Optional[int] = None, export: bool = True) -> List[dict]:
        """Train until ``steps`` (default ``config.steps``); checkpoint, log to ``OUT/log.jsonl``, export."""

        end = self.config.steps if steps is None else steps
        main = self.dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "train_config.json", train_config_to_dict(self.config))
        bar = tqdm(total=end, initial=self.step, desc="train", unit="step", disable=not (self.progress and main))
        records = []
        started = time.perf_counter()
        while self.step < end:
            record = self.train_step()
            record["seconds"] = round(time.perf_counter() - started, 3)
            records.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}", kind=record["kind"])
            if main and (self.step % self.config.log_every == 0 or self.step == end):
                with open(self.out / "log.jsonl", "a") as handle:
                    handle.write(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                                             for k, v in record.items()}) + "\n")
            if self.step % self.config.checkpoint_every == 0 or self.step == end:
                self.save_checkpoint()
        bar.close()
        if export and main:
            self.export()
        barrier(self.dist)
        return records


def _export(model_config, model_state: dict, ema: Optional[dict], step: int, train_config: dict, path: Path) -> Path:
    model = build_enhancer(model_config, device="cpu", dtype=torch.float32)
    model.load_state_dict({k: v.detach().cpu() for k, v in model_state.items()})
    if ema is not None:
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in ema.items():
                named[name].copy_(value.cpu())
    model.config = model.config.replace(untrained=False)
    export_safetensors(model, path, extra_metadata={
        "train_steps": step, "ema": ema is not None, "layout": model.config.stream.layout,
        "train_config": json.dumps(train_config)})
    return Path(path)


# Options applied after the decoder (output post-processing): exporting with them changes no input.
_INFERENCE_ONLY_STREAM_OPTIONS = frozenset({"guided_output", "guided_radius", "guided_eps", "region_pixel",
                                            "region_pixel_band"})


def _training_state(path: Path) -> dict:
    """A training checkpoint's state (on the CPU; loading copies it where it belongs)."""
    state = load_torch_file(path, expected="a simharmon training checkpoint (OUT/checkpoints/step_*.pt)")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a simharmon training checkpoint (a dict); found a {type(state).__name__}")
    return state


def export_checkpoint(checkpoint: str | Path, path: str | Path, use_ema: bool = True,
                      stream_changes: Optional[dict] = None) -> Path:
    """Export a training checkpoint (``OUT/checkpoints/step_*.pt``) as safetensors, without its data.

    The same file ``Trainer.export`` writes at that step: EMA weights unless ``use_ema`` is False.
    ``stream_changes``: inference-only stream options to embed (e.g. ``{"guided_output": True}``);
    options that change what the network sees are refused, since the weights were not trained so.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    state = _training_state(checkpoint)
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{checkpoint}: unsupported checkpoint version {state.get('version')}")
    config = config_from_dict(state["model_config"])
    if stream_changes:
        unsafe = sorted(set(stream_changes) - _INFERENCE_ONLY_STREAM_OPTIONS)
        if unsafe:
            raise ValueError(f"stream options {unsafe} change what the network was trained on; only "
                             f"{sorted(_INFERENCE_ONLY_STREAM_OPTIONS)} may be changed at export")
        config = config.replace(stream=dataclasses.replace(config.stream, **stream_changes))
    return _export(config, state["model"], state["ema"] if use_ema else None, int(state["step"]),
                   state["train_config"], Path(path))
