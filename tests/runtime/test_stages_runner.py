"""The harmonizer stages through the runtime's backends: compile equals eager; clear refusals."""

import pytest
import torch
from diffusers import UNet2DConditionModel

from simharmon.harmonize.stages import UNetStep
from simharmon.runtime.backends import BackendUnavailable
from simharmon.runtime.stages_runner import StageRunner
from tests.harmonize.helpers import randomize, tiny_components


def _small_unet():
    """Two levels (cross-attention + plain), one layer each: every block kind, little to compile."""
    torch.manual_seed(0)
    return randomize(UNet2DConditionModel(
        in_channels=9, out_channels=4, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, sample_size=8), 1, 0.02).eval()

# Measured |compile - eager| on this UNet step (fp32, CPU, inductor with freezing): 9.5e-07
# (reassociation in fused kernels); the tolerance leaves 10x room.
TOLERANCE = 1e-5


@pytest.mark.slow
def test_compiled_unet_step_matches_eager():
    step = UNetStep(_small_unet(), torch.randn(1, 3, 16, generator=torch.Generator().manual_seed(1)))
    gen = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 4, 8, 8, generator=gen), (torch.rand(1, 1, 8, 8, generator=gen) > 0.5).float(),
              torch.randn(1, 4, 8, 8, generator=gen), torch.tensor([500.0]))
    eager = StageRunner("eager")("unet", step, *inputs)
    runner = StageRunner("compile")
    compiled = runner("unet", step, *inputs)
    err = (compiled - eager).abs().max().item()
    print(f"compile vs eager max abs error: {err:.3g}")
    assert err <= TOLERANCE
    assert eager.abs().max() > 1e-3  # a real output, not zeros
    # One bucket per shape; the same shape reuses it.
    runner("unet", step, *inputs)
    assert len(runner.buckets()) == 1


def test_backend_refusals():
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        StageRunner("cudagraph", "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        StageRunner("fast")
    assert StageRunner("auto", "cpu").backend == "eager"
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable):
            StageRunner("tensorrt", "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cudagraph_stage_matches_eager():  # pragma: no cover - GPU only
    unet, _, _, prompt = tiny_components(0)
    step = UNetStep(unet.cuda(), prompt.cuda())
    inputs = (torch.randn(1, 4, 8, 8, device="cuda"), torch.ones(1, 1, 8, 8, device="cuda"),
              torch.randn(1, 4, 8, 8, device="cuda"), torch.tensor([500.0], device="cuda"))
    eager = StageRunner("eager", "cuda")("unet", step, *inputs)
    graph = StageRunner("cudagraph", "cuda")
    first = graph("unet", step, *inputs)
    second = graph("unet", step, *[x + 0 for x in inputs])
    assert (first - eager).abs().max().item() <= 1e-3 and torch.equal(first, second)
