"""Configuration: frozen, validated dataclasses.

YAML files in ``configs/`` are only their serialization, through OmegaConf structured configs:
``load_config(path)`` merges a YAML file onto the dataclass schema (unknown keys and wrong types
fail there), then builds the frozen dataclasses, whose ``__post_init__`` checks the values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .bundled import bundled_dir

__all__ = [
    "ConfigError",
    "DiTConfig",
    "TokenizerConfig",
    "DenoiserConfig",
    "StreamConfig",
    "EnhancerConfig",
    "OptimizationConfig",
    "EngineConfig",
    "ENGINE_BACKENDS",
    "RESOLUTION_BUCKETS",
    "WAN_LATENT_MEAN",
    "WAN_LATENT_STD",
    "load_config",
    "save_config",
    "config_to_dict",
    "config_from_dict",
    "build_structured",
    "read_yaml_mapping",
    "preset_path",
]


class ConfigError(ValueError):
    """A configuration value is invalid."""


# Wan2.1 per-channel latent statistics (COSMOS.md 3.5).
WAN_LATENT_MEAN: Tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN_LATENT_STD: Tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _freeze_tuple(obj: Any, name: str, cast=float) -> None:
    """Store a list-like field as a tuple (OmegaConf hands lists back)."""
    object.__setattr__(obj, name, tuple(cast(v) for v in getattr(obj, name)))


@dataclass(frozen=True)
class DiTConfig:
    """Cosmos-Predict2 MiniTrainDIT hyper-parameters (COSMOS.md 1.1). Defaults are the 0.6B model."""

    in_channels: int = 16
    out_channels: int = 16
    patch_spatial: int = 2
    patch_temporal: int = 1
    concat_padding_mask: bool = True
    model_channels: int = 1280
    num_blocks: int = 20
    num_heads: int = 20
    mlp_ratio: float = 4.0
    crossattn_emb_channels: int = 1024
    use_adaln_lora: bool = True
    adaln_lora_dim: int = 256
    max_img_h: int = 240
    max_img_w: int = 240
    max_frames: int = 128
    rope_h_extrapolation_ratio: float = 4.0
    rope_w_extrapolation_ratio: float = 4.0
    rope_t_extrapolation_ratio: float = 1.0

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "patch_spatial", "patch_temporal",
                     "model_channels", "num_blocks", "num_heads", "crossattn_emb_channels",
                     "adaln_lora_dim", "max_img_h", "max_img_w", "max_frames"):  # fmt: skip
            _require(getattr(self, name) > 0, f"dit.{name} must be positive, got {getattr(self, name)}")
        _require(
            self.model_channels % self.num_heads == 0,
            f"dit.model_channels ({self.model_channels}) must be divisible by dit.num_heads ({self.num_heads})",
        )
        head_dim = self.model_channels // self.num_heads
        _require(head_dim % 2 == 0 and head_dim >= 8, f"dit head_dim must be even and >= 8, got {head_dim}")
        # RoPE-3D splits head_dim into t/h/w parts; the t part must be even and non-empty.
        dim_hw = (head_dim // 6) * 2
        _require(head_dim - 2 * dim_hw > 0, f"dit head_dim {head_dim} leaves no temporal RoPE dimensions")
        _require(self.mlp_ratio > 0, f"dit.mlp_ratio must be positive, got {self.mlp_ratio}")
        _require(self.use_adaln_lora, "dit.use_adaln_lora=False is not supported (Cosmos-Predict2 uses AdaLN-LoRA)")
        _require(self.patch_temporal == 1, "dit.patch_temporal must be 1 (Cosmos-Predict2 text2image)")
        for name in ("rope_h_extrapolation_ratio", "rope_w_extrapolation_ratio", "rope_t_extrapolation_ratio"):
            _require(getattr(self, name) > 0, f"dit.{name} must be positive")

    @property
    def head_dim(self) -> int:
        return self.model_channels // self.num_heads


@dataclass(frozen=True)
class TokenizerConfig:
    """Wan2.1 causal 3D VAE (COSMOS.md 3.3). Defaults are the published tokenizer."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: Tuple[bool, ...] = (False, True, True)
    # Harmonizer decoder skip convolutions (skip_conv_0..8, HARMONIZER.md); off in the release commands.
    skip_connections: bool = False
    # False: encoder only (no ``conv2`` / ``decoder``), for models whose output is a colour transform
    # of the input (stream.colour_transform) and that never decode.
    decoder: bool = True
    latent_mean: Tuple[float, ...] = WAN_LATENT_MEAN
    latent_std: Tuple[float, ...] = WAN_LATENT_STD

    def __post_init__(self) -> None:
        _freeze_tuple(self, "dim_mult", int)
        _freeze_tuple(self, "temporal_downsample", bool)
        _freeze_tuple(self, "latent_mean")
        _freeze_tuple(self, "latent_std")
        _require(self.base_dim > 0 and self.z_dim > 0, "tokenizer.base_dim and tokenizer.z_dim must be positive")
        _require(len(self.dim_mult) >= 1 and all(m > 0 for m in self.dim_mult), "tokenizer.dim_mult must be positive")
        _require(self.num_res_blocks >= 1, "tokenizer.num_res_blocks must be >= 1")
        _require(
            len(self.temporal_downsample) == len(self.dim_mult) - 1,
            f"tokenizer.temporal_downsample needs {len(self.dim_mult) - 1} entries (one per downsample), "
            f"got {len(self.temporal_downsample)}",
        )
        _require(
            len(self.latent_mean) == self.z_dim and len(self.latent_std) == self.z_dim,
            f"tokenizer.latent_mean/latent_std need z_dim={self.z_dim} entries, "
            f"got {len(self.latent_mean)}/{len(self.latent_std)}",
        )
        _require(all(s > 0 for s in self.latent_std), "tokenizer.latent_std must be positive")
        _require(isinstance(self.decoder, bool), f"tokenizer.decoder must be a bool, got {self.decoder!r}")
        _require(self.decoder or not self.skip_connections, "tokenizer.skip_connections need the decoder")
        if self.skip_connections:
            _require(
                len(self.dim_mult) == 4 and self.num_res_blocks == 2,
                "tokenizer.skip_connections needs the Wan2.1 layout (4 stages, 2 residual blocks)",
            )

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(self.temporal_downsample)


@dataclass(frozen=True)
class DenoiserConfig:
    """The single-step rectified-flow denoiser (COSMOS.md 2, HARMONIZER.md)."""

    timestep: float = 250.0  # sigma = timestep / 1000
    null_text_tokens: int = 512  # length of the all-zero text condition
    sigma_data: float = 1.0

    def __post_init__(self) -> None:
        _require(0 < self.timestep < 1000, f"denoiser.timestep must be in (0, 1000), got {self.timestep}")
        _require(self.null_text_tokens > 0, "denoiser.null_text_tokens must be positive")
        _require(self.sigma_data == 1.0, "denoiser.sigma_data must be 1.0 (RectifiedFlowScaling asserts it)")

    @property
    def sigma(self) -> float:
        return self.timestep / 1000.0


LAYOUTS = ("release", "per_frame")
HISTORY_POLICIES = ("partial", "full", "none")
REFERENCE_LATENTS = ("reencode", "output")
HISTORY_WARPS = ("off", "flow", "depth")
COLOUR_TRANSFORMS = ("off", "affine_curve", "smooth_affine_curve")  # simharmon.runtime.colour
COLOUR_TRANSFORM_CHANNELS = 15
MAX_REGION_BAND = 32  # simharmon.ops.MAX_BAND: the blend kernel's shared-memory tile bound


@dataclass(frozen=True)
class StreamConfig:
    """Temporal conditioning of the streaming enhancer (HARMONIZER.md, issue "Streaming enhancer core").

    layout: "release" (ring of enhanced frames, re-encoded with the current frame on the VAE's time
        axis) or "per_frame" (paper Eq. 2: ring of enhanced latents, each frame encoded alone).
    offsets: how far back each reference is (1 = previous frame), newest first.
    history: "partial" conditions on the references that exist; "full" runs non-temporal until
        every offset is available (the release's behaviour); "none" is non-temporal throughout.
    reference_latent: per-frame layout only. "reencode" encodes the decoded, quantized output
        (exact); "output" reuses the denoiser's output latent (skips an encode; approximate).

    Options of issue 4 (kernels), all off by default so that the default stays exact to the release;
    each needs per-frame renderer inputs passed to ``StreamingEnhancer.step`` (see its docstring):
    history_warp: warp the history entries into the current view before the backbone: "flow"
        (renderer flow to the previous frame, composed over the ring), "depth" (current depth,
        intrinsics and the relative pose; exact pose composition and an occlusion test), or "off".
        Parts of an entry that have no valid source (disoccluded, off-screen) take the current content.
    depth_tolerance: "depth" only: relative depth tolerance of the occlusion test.
    region_latent: outside the inserted-actor mask plus ``region_band`` latent cells, the output
        latent is the input latent (soft band in between).
    region_band: band radius in latent cells (8 pixels each), 0..32.
    region_pixel: after decoding, outside the mask plus ``region_pixel_band`` pixels the output is the
        input frame itself (bit-exact for 8-bit inputs).
    region_pixel_band: band radius in pixels, 0..32.
    mask_condition: the inserted-actor mask (per-frame input ``mask``; latent resolution, a cell the
        mask touches is 1) goes into the DiT's padding-mask input channel, which Cosmos feeds zeros.
        Only for models trained that way (the bundled default); a frame without a mask gets zeros.
    guided_output: the output is a colour guided filter (He et al.) of the decoded frame with the
        INPUT frame as the guide: each channel locally an affine function of the input's RGB, fitted
        to the decoded frame over
        ``(2 guided_radius + 1)^2`` windows with regularization ``guided_eps`` (on [0, 1] values).
        It keeps the input's detail, which is exact and flow-consistent, and takes the model's
        local colour and exposure, so a small tokenizer's blur and its frame-to-frame aliasing
        stay out of the output. Off by default (the release decodes the frame as it is).
    colour_transform: "off" (decode the output latent, as the release) or "affine_curve": the current
        frame's output latent, less the denoiser's skip path, is read as a 1/8-resolution grid of
        colour-transform coefficients (a 3x3 matrix, an offset and a curve per channel) that is
        upsampled and applied to the INPUT frame; nothing is decoded (``simharmon.runtime.colour``).
        "smooth_affine_curve": the same transform's CHANGE is evaluated on a low-passed input and
        added to the input, so the input's detail passes through unchanged.
        Only for models trained that way. Output levels are then rounded to nearest, not truncated.
    """

    layout: str = "release"
    offsets: Tuple[int, ...] = (1, 2, 3, 4)
    history: str = "full"
    reference_latent: str = "reencode"
    history_warp: str = "off"
    depth_tolerance: float = 0.02
    region_latent: bool = False
    region_band: int = 1
    region_pixel: bool = False
    region_pixel_band: int = 8
    mask_condition: bool = False
    guided_output: bool = False
    guided_radius: int = 7
    guided_eps: float = 1e-3
    colour_transform: str = "off"

    def __post_init__(self) -> None:
        _freeze_tuple(self, "offsets", int)
        _require(self.layout in LAYOUTS, f"stream.layout must be one of {LAYOUTS}, got {self.layout!r}")
        _require(self.history in HISTORY_POLICIES, f"stream.history must be one of {HISTORY_POLICIES}, got {self.history!r}")
        _require(
            self.reference_latent in REFERENCE_LATENTS,
            f"stream.reference_latent must be one of {REFERENCE_LATENTS}, got {self.reference_latent!r}",
        )
        _require(len(self.offsets) >= 1, "stream.offsets needs at least one offset")
        _require(all(o >= 1 for o in self.offsets), f"stream.offsets must be >= 1 (past frames), got {self.offsets}")
        _require(len(set(self.offsets)) == len(self.offsets), f"stream.offsets must be distinct, got {self.offsets}")
        _require(self.history_warp in HISTORY_WARPS,
                 f"stream.history_warp must be one of {HISTORY_WARPS}, got {self.history_warp!r}")
        _require(0 < self.depth_tolerance < float("inf"),
                 f"stream.depth_tolerance must be a positive number, got {self.depth_tolerance}")
        for name in ("region_latent", "region_pixel", "mask_condition", "guided_output"):
            _require(isinstance(getattr(self, name), bool), f"stream.{name} must be a bool, got {getattr(self, name)!r}")
        _require(isinstance(self.guided_radius, int) and not isinstance(self.guided_radius, bool)
                 and 1 <= self.guided_radius <= 64, f"stream.guided_radius must be an int in [1, 64], got "
                 f"{self.guided_radius!r}")
        _require(0 < self.guided_eps < float("inf"), f"stream.guided_eps must be positive, got {self.guided_eps}")
        _require(self.colour_transform in COLOUR_TRANSFORMS,
                 f"stream.colour_transform must be one of {COLOUR_TRANSFORMS}, got {self.colour_transform!r}")
        if self.colour_transform != "off":
            _require(not self.region_latent and not self.guided_output,
                     "stream.colour_transform reads the output latent as transform coefficients and applies them "
                     "to the input: it cannot be combined with region_latent or guided_output")
        for name in ("region_band", "region_pixel_band"):
            value = getattr(self, name)
            _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REGION_BAND,
                     f"stream.{name} must be an int in [0, {MAX_REGION_BAND}], got {value!r}")

    @property
    def needs_frame_inputs(self) -> bool:
        """True when ``step`` takes per-frame renderer inputs (history warping, region limits, mask condition)."""
        return self.history_warp != "off" or self.uses_mask

    @property
    def uses_mask(self) -> bool:
        """True when an option reads the per-frame actor mask."""
        return self.region_latent or self.region_pixel or self.mask_condition

    @property
    def num_refs(self) -> int:
        return len(self.offsets)

    @property
    def history_length(self) -> int:
        """Frames the ring must hold so that every offset is available."""
        return max(self.offsets)


@dataclass(frozen=True)
class EnhancerConfig:
    """Everything needed to build and run an enhancer."""

    name: str = "cosmos-0.6b"
    dit: DiTConfig = field(default_factory=DiTConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    dtype: str = "float32"  # compute dtype: float32, bfloat16 or float16
    untrained: bool = False  # True for presets that ship without trained weights

    def __post_init__(self) -> None:
        _require(self.dtype in ("float32", "bfloat16", "float16"), f"dtype must be float32/bfloat16/float16, got {self.dtype!r}")
        _require(
            self.dit.in_channels == self.tokenizer.z_dim == self.dit.out_channels,
            f"dit in/out channels ({self.dit.in_channels}/{self.dit.out_channels}) must equal "
            f"tokenizer.z_dim ({self.tokenizer.z_dim})",
        )
        _require(not self.stream.mask_condition or self.dit.concat_padding_mask,
                 "stream.mask_condition feeds the DiT's padding-mask channel: it needs dit.concat_padding_mask")
        _require(self.tokenizer.decoder or self.stream.colour_transform != "off",
                 "tokenizer.decoder false (encoder only) needs stream.colour_transform: the output is never decoded")
        _require(self.stream.colour_transform == "off" or self.tokenizer.z_dim >= COLOUR_TRANSFORM_CHANNELS,
                 f"stream.colour_transform needs at least {COLOUR_TRANSFORM_CHANNELS} latent channels, "
                 f"tokenizer.z_dim is {self.tokenizer.z_dim}")

        if self.stream.layout == "release":
            group = self.tokenizer.temporal_compression
            _require(
                self.stream.num_refs % group == 0,
                f"stream.layout 'release' stacks the references on the VAE's time axis, which groups "
                f"{group} frames per latent: stream.offsets needs a multiple of {group} entries, "
                f"got {len(self.stream.offsets)}",
            )

    @property
    def pixel_multiple(self) -> int:
        """Frame height and width must be multiples of this (VAE stride times DiT patch)."""
        return self.tokenizer.spatial_compression * self.dit.patch_spatial

    def replace(self, **changes: Any) -> EnhancerConfig:
        """A copy with top-level fields or sections replaced (validation runs again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class OptimizationConfig:
    """Exact optimizations of the runtime (issue "Compiled runtime"); each can be switched off.

    precompute_modulation: the AdaLN modulations (all blocks and the final layer) for the fixed
        timestep are computed once, not per frame.
    skip_null_cross_attention: cross-attention is skipped, but only after checking that the text
        condition is all zeros (then it is exactly an identity, COSMOS.md 1.4).
    fold_single_frame_convs: single-frame chunks (the current frame's chunk in encode, latent 0 in
        decode) run the causal 3x3x3 convolutions as 2D convolutions with ``weight[:, :, -1]``.
    last_block_current_only: the last DiT block computes queries and MLP only for latent frame 0's
        tokens, and the final layer only for them (the other frames' x0 is never used).
    fused_io: uint8 HWC in, uint8 HWC out in one conversion each (release quantization).
    """

    precompute_modulation: bool = True
    skip_null_cross_attention: bool = True
    fold_single_frame_convs: bool = True
    last_block_current_only: bool = True
    fused_io: bool = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _require(isinstance(getattr(self, f.name), bool), f"optimizations.{f.name} must be a bool")

    @classmethod
    def none(cls) -> OptimizationConfig:
        """Every optimization off: the plain computation."""
        return cls(**{f.name: False for f in dataclasses.fields(cls)})

    def enabled(self) -> Tuple[str, ...]:
        """Names of the optimizations that are on."""
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name))


ENGINE_BACKENDS = ("auto", "eager", "compile", "cudagraph", "tensorrt")
# (width, height) of the Harmonizer's resolution keys 1024, 960, 1360 (HARMONIZER.md): the GPU benchmark's sizes.
RESOLUTION_BUCKETS: Tuple[Tuple[int, int], ...] = ((1024, 576), (960, 544), (1360, 768))


@dataclass(frozen=True)
class EngineConfig:
    """How the runtime engine executes a model (``simharmon.runtime.engine.Engine``).

    backend: "auto" (cudagraph on CUDA, eager on the CPU), "eager", "compile" (torch.compile,
        inductor), "cudagraph" (the whole step, ring gather and write-back included, captured over
        static buffers; CUDA only) or "tensorrt" (torch-tensorrt).
    dtype: compute dtype the model is cast to: "auto" (the model's own on the CPU, bfloat16 on
        CUDA), "bfloat16", "float16" or "float32".
    device: "cuda", "cuda:N" or "cpu".
    cudagraph_compile: cudagraph backend only: capture the torch.compile'd step (else the eager one).
    inductor_freezing: compile: let inductor freeze the weights so that constants fold.
    resolutions: allowed (width, height) sizes; empty allows any size the model takes. Every
        size, batch size and history state has its own static step, built on first use.
    batch_sizes: the static batch sizes ready streams are grouped into (``buckets.plan_batches``).
    max_padding: pad a batch up to the next size when at most this fraction of it is padding.
    max_streams: live streams (history slots) per resolution.
    max_history: largest number of references (V = 1 + max_history frames on the time axis).
    max_cameras: largest rig (``Engine.open``).
    output_slots: pinned host buffers per rig that results rotate through; a result must be read
        before this many later submissions.
    optimizations: the exact optimizations (all on by default).
    """

    backend: str = "auto"
    dtype: str = "auto"
    device: str = "cuda"
    cudagraph_compile: bool = True
    inductor_freezing: bool = True
    resolutions: Tuple[Tuple[int, int], ...] = ()
    batch_sizes: Tuple[int, ...] = (1, 2, 4, 8)
    max_padding: float = 0.25
    max_streams: int = 64
    max_history: int = 4
    max_cameras: int = 8
    output_slots: int = 2
    optimizations: OptimizationConfig = field(default_factory=OptimizationConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolutions", tuple(tuple(int(v) for v in r) for r in self.resolutions))
        _freeze_tuple(self, "batch_sizes", int)
        _require(self.backend in ENGINE_BACKENDS, f"engine.backend must be one of {ENGINE_BACKENDS}, got {self.backend!r}")
        _require(self.dtype in ("auto", "float32", "bfloat16", "float16"),
                 f"engine.dtype must be auto/float32/bfloat16/float16, got {self.dtype!r}")
        _require(self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:"),
                 f"engine.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")  # fmt: skip
        _require(self.backend not in ("cudagraph", "tensorrt") or self.device != "cpu",
                 f"engine.backend {self.backend!r} needs a CUDA device, got device 'cpu'")  # fmt: skip
        for res in self.resolutions:
            _require(len(res) == 2 and res[0] > 0 and res[1] > 0, f"engine.resolutions entries must be (width, height) > 0, got {res}")
        _require(len(set(self.resolutions)) == len(self.resolutions), "engine.resolutions has duplicates")
        _require(len(self.batch_sizes) >= 1 and all(b >= 1 for b in self.batch_sizes),
                 f"engine.batch_sizes must be positive, got {self.batch_sizes}")
        _require(0.0 <= self.max_padding < 1.0, f"engine.max_padding must be in [0, 1), got {self.max_padding}")
        _require(self.max_streams >= 1, f"engine.max_streams must be >= 1, got {self.max_streams}")
        _require(1 <= self.max_history <= 4, f"engine.max_history must be in 1..4 (V = 1..5), got {self.max_history}")
        _require(self.max_cameras >= 1, f"engine.max_cameras must be >= 1, got {self.max_cameras}")
        _require(self.output_slots >= 1, f"engine.output_slots must be >= 1, got {self.output_slots}")
        _require(isinstance(self.optimizations, OptimizationConfig), "engine.optimizations must be an OptimizationConfig")


_CONFIG_DIR = bundled_dir("configs")  # configs/ of the source tree, or simharmon/configs of a wheel


def preset_path(name: str) -> Path:
    """Path of a bundled preset, e.g. ``preset_path("tiny")`` -> ``configs/tiny.yaml``."""
    path = _CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in _CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no preset named {name!r}; available: {available}")
    return path


def build_structured(schema: type, data: dict, what: str = "config"):
    """Validate a plain mapping against a dataclass schema (OmegaConf) and build the frozen dataclass."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:  # unknown key, wrong type, ...
        raise ConfigError(f"invalid {what}: {exc}") from exc


def read_yaml_mapping(path: Path) -> dict:
    """Read a YAML file whose top level is a mapping; ConfigError for a missing or malformed file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # YAML syntax errors
        raise ConfigError(f"could not parse config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return data


def config_from_dict(data: dict) -> EnhancerConfig:
    """Validate a plain mapping against the schema and build an EnhancerConfig."""
    return build_structured(EnhancerConfig, data)


def load_config(path_or_name: str | Path) -> EnhancerConfig:
    """Load a YAML config file, or a bundled preset by name ("tiny", "cosmos-0.6b")."""
    path = Path(path_or_name)
    if not path.exists() and path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
        path = preset_path(str(path_or_name))
    return config_from_dict(read_yaml_mapping(path))


def config_to_dict(config: EnhancerConfig) -> dict:
    """Plain, YAML/JSON-serializable mapping of a config."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def save_config(config: EnhancerConfig, path: str | Path) -> None:
    """Write a config as YAML."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
