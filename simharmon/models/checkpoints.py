"""Reading the published checkpoints with every key accounted for.

Formats (facts in ../shared/reference/COSMOS.md section 4):

* ``cosmos-dit``: Cosmos-Predict2 ``model.pt``, a flat mapping with DiT keys under ``net.`` (and
  possibly ``net_ema.``).
* ``harmonizer``: NVIDIA Harmonizer ``.pkl``, a dict with ``state_dict_unet`` (DiT under ``net.`` /
  ``net_ema.``, or ``dit.`` / ``dit_ema.`` when written by newer code) and ``state_dict_vae``
  (unprefixed Wan ``VAE_`` keys, optionally with ``decoder.skip_conv_k``).
* ``wan-tokenizer``: Cosmos-Predict2 ``tokenizer/tokenizer.pth``, the plain ``VAE_`` state dict.
* ``simharmon``: our own safetensors export, keys under ``dit.`` and ``tokenizer.``, with the
  config in the file's metadata.

Ignore rules, the only keys that are ever left unloaded (each is reported in ``LoadReport.ignored``):

1. ``*._extra_state``: Transformer Engine metadata (RMSNorm / DotProductAttention), not weights.
2. Harmonizer training state: ``optimizer``, ``optimizer_disc``, ``net_disc``.
3. The weight copy not chosen: ``net_ema.`` / ``dit_ema.`` when live weights are loaded, and
   ``net.`` / ``dit.`` when EMA weights are loaded.

The DiT's seven buffers (``accum_*`` training counters and the ``pos_embedder`` index tables) are
deterministic; a file without them is accepted and they keep their constructed values. Anything
else (a missing, unexpected or wrong-shaped key) raises ``CheckpointError`` listing the first
offenders, unless ``strict=False``, in which case it is reported and the rest loads.

A file that cannot be read at all gets one line: the file, what was expected (from its suffix) and
what was found by looking at its bytes (empty, text, random data, a truncated zip, a plain pickle,
a damaged safetensors header, an unexpected top-level type). Advice to trust the file
(``trusted=True``, ``--trust-checkpoint``) is given only for a well-formed pickle that weights-only
loading refuses because it names Python objects.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

__all__ = [
    "CheckpointError",
    "CheckpointParts",
    "LoadReport",
    "DIT_OPTIONAL_BUFFERS",
    "SIMHARMON_FORMAT",
    "read_checkpoint",
    "load_torch_file",
    "load_state_strict",
    "save_safetensors",
]

SIMHARMON_FORMAT = "simharmon-enhancer"
SIMHARMON_FORMAT_VERSION = "1"
HARMONIZER_TRAINING_KEYS = ("optimizer", "optimizer_disc", "net_disc")
DIT_OPTIONAL_BUFFERS = (
    "accum_video_sample_counter",
    "accum_image_sample_counter",
    "accum_iteration",
    "accum_train_in_hours",
    "pos_embedder.seq",
    "pos_embedder.dim_spatial_range",
    "pos_embedder.dim_temporal_range",
)
_SHOW = 8  # how many offending keys an error lists per category
TORCH_EXPECTED = "a PyTorch checkpoint (a torch.save zip archive, or a legacy torch.save pickle)"
SAFETENSORS_EXPECTED = "a safetensors file (8-byte header length, JSON header, tensor data)"
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a pre-1.6 torch.save file
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, of an unknown layout, or does not match the model."""


@dataclass
class CheckpointParts:
    """What one checkpoint file provides.

    dit / tokenizer: unprefixed state dicts (None when the file has no such part).
    ignored: rule -> keys left unloaded under the documented ignore rules.
    config: an embedded simharmon config mapping (our safetensors export), else None.
    layout: the temporal layout the file was trained for, when the format implies one.
    """

    path: str
    format: str
    dit: Optional[Dict[str, torch.Tensor]] = None
    tokenizer: Optional[Dict[str, torch.Tensor]] = None
    ignored: Dict[str, List[str]] = field(default_factory=dict)
    config: Optional[dict] = None
    layout: Optional[str] = None

    def ignore(self, rule: str, keys) -> None:
        keys = list(keys)
        if keys:
            self.ignored.setdefault(rule, []).extend(keys)


@dataclass
class LoadReport:
    """The outcome of loading one state dict into one module."""

    what: str
    loaded: int = 0
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    defaulted: List[str] = field(default_factory=list)  # optional buffers absent from the file

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        def listing(title: str, keys: List[str]) -> str:
            more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
            return f"\n  {len(keys)} {title}: {', '.join(keys[:_SHOW])}{more}"

        text = f"{self.what}: {self.loaded} tensors loaded"
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("wrong-shaped", self.mismatched)):  # fmt: skip
            if keys:
                text += listing(title, keys)
        if self.defaulted:
            text += f"\n  {len(self.defaulted)} deterministic buffers absent from the file kept their built values"
        return text


@dataclass(frozen=True)
class _Found:
    """What a file's bytes are. kind: empty, text, unknown, zip, zip-damaged, zip-other, torch-pickle,
    plain-pickle, pickle-damaged, safetensors, safetensors-damaged."""

    kind: str
    what: str  # for messages: "found <what>"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0][:200] if lines else "") or type(exc).__name__


def _pickle_ops(stream, limit: Optional[int] = None) -> List[Tuple[str, Any]]:
    """The opcodes of one pickle (name, argument), read without executing anything; raises
    ValueError for a stream that is not a complete pickle. ``limit``: stop after that many."""
    ops = []
    for op, arg, _ in pickletools.genops(stream):
        ops.append((op.name, arg))
        if limit is not None and len(ops) >= limit:
            break
    return ops


def _identify(path: Path) -> _Found:
    """Classify a file by its bytes (never by unpickling it)."""
    size = path.stat().st_size
    if size == 0:
        return _Found("empty", "an empty file (0 bytes)")
    with path.open("rb") as handle:
        head = handle.read(4096)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            return _Found("zip-damaged", f"a truncated or damaged zip archive ({size} bytes; {_first_line(exc)})")
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return _Found("zip-other", f"a zip archive that is not a torch.save checkpoint (no data.pkl among its "
                                       f"{len(names)} entries)")
        return _Found("zip", "a torch.save zip archive")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode
        try:
            ops = _pickle_ops(io.BytesIO(head), limit=4)
        except ValueError:
            ops = []  # a valid start whose first pickle ends beyond 4 KiB: not a legacy magic pickle
        if any(name == "LONG1" and arg == _TORCH_LEGACY_MAGIC for name, arg in ops):
            return _Found("torch-pickle", "a legacy torch.save pickle")
        return _Found("plain-pickle", "a plain Python pickle (pickle.dump), which torch.load cannot read; re-save "
                                      "it with torch.save")
    if size >= 10 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 2**32:  # text never looks like this
        length = struct.unpack("<Q", head[:8])[0]
        if 8 + length > size:
            return _Found("safetensors-damaged", f"a safetensors header that claims {length} bytes in a {size}-byte "
                                                 "file (truncated or corrupt)")
        with path.open("rb") as handle:
            handle.seek(8)
            raw = handle.read(length)
        try:
            json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            return _Found("safetensors-damaged", f"a safetensors file whose header is not valid JSON ({_first_line(exc)})")
        return _Found("safetensors", "a safetensors file")
    try:
        text = head[:512].decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return _Found("text", f"a text file (starting {text[:40]!r})")
    return _Found("unknown", f"unrecognised binary data (first bytes {head[:8].hex(' ')})")


def _unreadable(path: Path, expected: str, found: str, cause: Optional[BaseException] = None) -> CheckpointError:
    detail = f" ({type(cause).__name__}: {_first_line(cause)})" if cause is not None else ""
    return CheckpointError(f"{path}: expected {expected}; found {found}{detail}")


def _refused_global(path: Path, found: _Found, refusal: BaseException) -> Optional[str]:
    """The Python object weights-only loading refused, when the file is a well-formed pickle that
    names one; None when the refusal is really about damaged data."""
    named = _UNSUPPORTED_GLOBAL.search(str(refusal))
    if named is None:
        return None
    try:
        if found.kind == "zip":
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl"))
                _pickle_ops(io.BytesIO(archive.read(member)))
        else:  # legacy: magic, protocol version, system info, then the object itself
            with path.open("rb") as handle:
                for _ in range(4):
                    _pickle_ops(handle)
    except (ValueError, zipfile.BadZipFile, OSError, StopIteration):
        return None
    return named.group(1)


def _torch_load(path: Path, trusted: bool, found: _Found) -> Any:
    """torch.load with weights_only=True (io.BytesIO, old TE extra state, allowed too); every
    failure becomes one CheckpointError line."""
    try:
        # An open file, not the path: torch.load treats a path ending in .safetensors as safetensors.
        with torch.serialization.safe_globals([io.BytesIO]), path.open("rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(path, found, exc)
        if refused is None:
            raise _unreadable(path, TORCH_EXPECTED, f"{found.what} whose pickle is damaged", exc) from exc
        if not trusted:
            raise CheckpointError(
                f"{path}: the file is a well-formed checkpoint that names Python objects weights-only loading "
                f"refuses ({refused}); if you trust the file, pass trusted=True (CLI: --trust-checkpoint)"
            ) from exc
        try:
            with path.open("rb") as handle:
                return torch.load(handle, map_location="cpu", weights_only=False)
        except Exception as full:  # unpickling a trusted file runs its code: any error is possible
            raise _unreadable(path, TORCH_EXPECTED, f"{found.what} that fails to unpickle", full) from full
    except Exception as exc:  # torch raises RuntimeError, EOFError, KeyError, ... for damaged archives
        raise _unreadable(path, TORCH_EXPECTED, f"{found.what} that torch cannot read", exc) from exc


def load_torch_file(path: str | Path, *, expected: str = TORCH_EXPECTED, trusted: bool = False) -> Any:
    """``torch.load`` a local file on the CPU, weights-only (``trusted``: full unpickling for a file
    that needs it), after checking its bytes. Every failure is one CheckpointError line naming the
    file, ``expected`` and what was found."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}" if not path.exists() else f"checkpoint is not a file: {path}")
    found = _identify(path)
    if found.kind not in ("zip", "torch-pickle"):
        raise _unreadable(path, expected, found.what)
    return _torch_load(path, trusted, found)


def _split_extra_state(state: Mapping[str, Any], parts: CheckpointParts) -> Dict[str, torch.Tensor]:
    """Drop Transformer Engine ``._extra_state`` entries (rule 1); check the rest are tensors."""
    kept: Dict[str, torch.Tensor] = {}
    extra = []
    for key, value in state.items():
        if key.endswith("._extra_state") or key == "_extra_state":
            extra.append(key)
        elif not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{parts.path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        else:
            kept[key] = value
    parts.ignore("transformer-engine _extra_state", extra)
    return kept


def _take_prefixed(state: Mapping[str, Any], live: Tuple[str, ...], ema: Tuple[str, ...], use_ema: bool,
                   parts: CheckpointParts, what: str) -> Dict[str, Any]:
    """Select the live or EMA copy of the DiT by key prefix (rule 3); anything else is unexpected."""
    chosen, other = (ema, live) if use_ema else (live, ema)
    selected: Dict[str, Any] = {}
    skipped, stray = [], []
    for key, value in state.items():
        prefix = next((p for p in chosen if key.startswith(p)), None)
        if prefix is not None:
            selected[key[len(prefix):]] = value
        elif any(key.startswith(p) for p in other):
            skipped.append(key)
        else:
            stray.append(key)
    if stray:
        raise CheckpointError(
            f"{parts.path}: {what} has {len(stray)} keys outside the known prefixes "
            f"{live + ema}: {', '.join(stray[:_SHOW])}"
        )
    if not selected:
        kind = "EMA" if use_ema else "live"
        raise CheckpointError(f"{parts.path}: {what} has no {kind} weights (no keys under {chosen})")
    parts.ignore("unchosen " + ("live" if use_ema else "EMA") + " weights", skipped)
    return selected


def _read_safetensors(path: Path) -> CheckpointParts:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(path, SAFETENSORS_EXPECTED, "a safetensors file whose header and tensor data do not agree "
                                                      "(truncated or corrupt)", exc) from exc
    if metadata.get("format") != SIMHARMON_FORMAT:
        raise CheckpointError(f"{path}: safetensors file without simharmon metadata (format={metadata.get('format')!r})")
    parts = CheckpointParts(path=str(path), format="simharmon")
    if "config" in metadata:
        parts.config = json.loads(metadata["config"])
        parts.layout = parts.config.get("stream", {}).get("layout")
    parts.dit = {k[4:]: v for k, v in tensors.items() if k.startswith("dit.")}
    parts.tokenizer = {k[10:]: v for k, v in tensors.items() if k.startswith("tokenizer.")}
    stray = [k for k in tensors if not k.startswith(("dit.", "tokenizer."))]
    if stray:
        raise CheckpointError(f"{path}: unexpected keys outside dit./tokenizer.: {', '.join(stray[:_SHOW])}")
    parts.dit = parts.dit or None
    parts.tokenizer = parts.tokenizer or None
    return parts


def read_checkpoint(path: str | Path, *, use_ema: bool = False, trusted: bool = False) -> CheckpointParts:
    """Read a checkpoint file of any supported format into its DiT and tokenizer state dicts.

    use_ema: take the EMA copy of the DiT (``net_ema.`` / ``dit_ema.``) instead of the live one.
    trusted: allow full unpickling for files that weights_only loading refuses.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    found = _identify(path)
    if found.kind == "safetensors":  # by content, whatever the suffix
        return _read_safetensors(path)
    if found.kind not in ("zip", "torch-pickle"):
        raise _unreadable(path, SAFETENSORS_EXPECTED if path.suffix == ".safetensors" else TORCH_EXPECTED, found.what)

    obj = _torch_load(path, trusted, found)
    if not isinstance(obj, Mapping):
        raise _unreadable(path, "a mapping of names to tensors at the top level (a Cosmos-Predict2 model.pt, a "
                                "Harmonizer .pkl or a Wan tokenizer.pth)", f"a {type(obj).__name__}")
    if "state_dict_unet" in obj or "state_dict_vae" in obj:
        parts = CheckpointParts(path=str(path), format="harmonizer", layout="release")
        known = {"state_dict_unet", "state_dict_vae", *HARMONIZER_TRAINING_KEYS}
        stray = [k for k in obj if k not in known]
        if stray:
            raise CheckpointError(f"{path}: unknown top-level entries in a Harmonizer checkpoint: {stray[:_SHOW]}")
        parts.ignore("harmonizer training state", [k for k in HARMONIZER_TRAINING_KEYS if k in obj])
        unet, vae = obj.get("state_dict_unet"), obj.get("state_dict_vae")
        if unet is not None:
            unet = _take_prefixed(unet, ("net.", "dit."), ("net_ema.", "dit_ema."), use_ema, parts, "state_dict_unet")
            parts.dit = _split_extra_state(unet, parts)
        if vae is not None:
            parts.tokenizer = _split_extra_state(vae, parts)
        return parts

    keys = list(obj.keys())
    if keys and all(isinstance(k, str) for k in keys):
        if any(k.startswith(("net.", "net_ema.")) for k in keys):
            parts = CheckpointParts(path=str(path), format="cosmos-dit")
            state = _take_prefixed(obj, ("net.",), ("net_ema.",), use_ema, parts, "model.pt")
            parts.dit = _split_extra_state(state, parts)
            return parts
        if any(k.startswith(("encoder.", "decoder.")) for k in keys):
            parts = CheckpointParts(path=str(path), format="wan-tokenizer")
            parts.tokenizer = _split_extra_state(obj, parts)
            return parts
    raise CheckpointError(
        f"{path}: unknown checkpoint layout (first keys: {keys[:_SHOW]}); expected a Cosmos-Predict2 model.pt, "
        "a Harmonizer .pkl, a Wan tokenizer.pth or a simharmon .safetensors export"
    )


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, *,
                      optional: Tuple[str, ...] = (), strict: bool = True) -> LoadReport:
    """Copy ``state`` into ``module``, accounting for every key.

    optional: module keys that may be absent from ``state`` (they keep their built values).
    strict: raise CheckpointError on any missing, unexpected or wrong-shaped key; otherwise load
        what matches and return the report.
    """
    own = module.state_dict()
    report = LoadReport(what=what)
    usable: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append(f"{key} (file {list(value.shape)} vs model {list(own[key].shape)})")
        else:
            usable[key] = value
    for key in own:
        if key not in state:
            (report.defaulted if key in optional else report.missing).append(key)
    if strict and not report.ok:
        raise CheckpointError("checkpoint does not match the model\n" + report.describe())
    with torch.no_grad():
        for key, value in usable.items():
            own[key].copy_(value.to(own[key].dtype))
    report.loaded = len(usable)
    return report


def save_safetensors(path: str | Path, dit: nn.Module, tokenizer: nn.Module, config: Optional[dict] = None,
                     extra_metadata: Optional[Dict[str, str]] = None) -> None:
    """Export DiT and tokenizer weights as one safetensors file (written atomically)."""

    tensors = {f"dit.{k}": v.detach().contiguous().cpu() for k, v in dit.state_dict().items()}
    tensors.update({f"tokenizer.{k}": v.detach().contiguous().cpu() for k, v in tokenizer.state_dict().items()})
    metadata = {"format": SIMHARMON_FORMAT, "format_version": SIMHARMON_FORMAT_VERSION}
    if config is not None:
        metadata["config"] = json.dumps(config)
    metadata.update(extra_metadata or {})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
