"""Argument validation shared by the ops: clear errors before any kernel or reference runs.

Shapes are written as lists of sizes or symbols (``["N", 2, "H", "W"]``); a symbol seen once binds
the size for the later tensors of the same call, so mismatches name both tensors' shapes.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

Dim = Union[int, str]


def check_tensor(op: str, name: str, x, dims: Sequence[Dim], sizes: Dict[str, int],
                 dtypes: Optional[Sequence[torch.dtype]] = FLOAT_DTYPES,
                 device: Optional[torch.device] = None) -> None:
    """Raise TypeError / ValueError unless ``x`` is a tensor of shape ``dims`` and one of ``dtypes``.

    ``sizes`` maps the symbols bound so far to their sizes and is updated in place.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    spec = "[" + ", ".join(str(d) for d in dims) + "]"
    if x.dim() != len(dims):
        raise ValueError(f"{op}: {name} must have shape {spec}, got {list(x.shape)}")
    for dim, size in zip(dims, x.shape):
        if isinstance(dim, int):
            if size != dim:
                raise ValueError(f"{op}: {name} must have shape {spec}, got {list(x.shape)}")
        elif dim in sizes and sizes[dim] != size:
            bound = ", ".join(f"{k}={v}" for k, v in sizes.items())
            raise ValueError(f"{op}: {name} must have shape {spec} with {bound} (from the earlier arguments), "
                             f"got {list(x.shape)}")
        else:
            if size < 1:
                raise ValueError(f"{op}: {name} has an empty dimension {dim}: shape {list(x.shape)}")
            sizes[dim] = size
    if dtypes is not None and x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{op}: {name} must have dtype {names}; got {str(x.dtype).replace('torch.', '')}")
    if device is not None and x.device != device:
        raise ValueError(f"{op}: {name} is on {x.device}, but the other inputs are on {device}")


def check_mask(op: str, name: str, x, sizes: Dict[str, int], device: torch.device) -> None:
    """A ``[N, 1, H, W]`` weight in [0, 1]: any floating dtype, or bool (read as 0 / 1)."""
    check_tensor(op, name, x, ["N", 1, "H", "W"], sizes, FLOAT_DTYPES + (torch.bool,), device)


def check_choice(op: str, name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{op}: {name} must be one of {tuple(choices)}, got {value!r}")


def check_same_dtype(op: str, names: Sequence[str], tensors: Sequence[torch.Tensor]) -> None:
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        got = ", ".join(f"{n}: {str(t.dtype).replace('torch.', '')}" for n, t in zip(names, tensors))
        raise TypeError(f"{op}: {' and '.join(names)} must have the same dtype, got {got}")


def aux_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of validity maps and flows computed for data of ``dtype``: float64 stays, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def weight32(mask: torch.Tensor) -> torch.Tensor:
    """A mask as the kernels read it: contiguous fp32 (a no-op when it already is)."""
    return mask.to(torch.float32).contiguous()
