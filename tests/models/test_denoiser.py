"""RectifiedFlowDenoiser: x0 formula, DiT inputs (t not t*1000, null condition), dtypes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from simharmon.config import DenoiserConfig, DiTConfig
from simharmon.models.denoiser import RectifiedFlowDenoiser, rectified_flow_coefficients
from simharmon.models.dit import CosmosDiT

TINY = DiTConfig(model_channels=64, num_blocks=2, num_heads=2, crossattn_emb_channels=32, adaln_lora_dim=16)
CFG = DenoiserConfig(timestep=250.0, null_text_tokens=16)


class LinearStub(nn.Module):
    """F(x, t) = a * x + b * t, with the DiT's call signature; records what it was given."""

    def __init__(self, a: float, b: float, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config = TINY
        self.a = nn.Parameter(torch.tensor(a, dtype=dtype))
        self.b = b
        self.calls = []

    @property
    def dtype(self) -> torch.dtype:
        return self.a.dtype

    def forward(self, x, timesteps, crossattn_emb, padding_mask=None):
        self.calls.append((x, timesteps, crossattn_emb, padding_mask))
        return self.a * x + self.b * timesteps[:, :, None, None, None]


def test_coefficients_at_sigma_0p25():
    c_skip, c_out, c_in, c_noise = rectified_flow_coefficients(0.25)
    assert c_noise == pytest.approx(0.2, abs=1e-15)  # t = sigma / (sigma + 1), NOT t * 1000
    assert (c_skip, c_out, c_in) == pytest.approx((0.8, -0.2, 0.8), abs=1e-15)
    sig = torch.tensor([0.25, 0.999])
    c_skip_t, c_out_t, c_in_t, c_noise_t = rectified_flow_coefficients(sig)
    t = sig / (sig + 1)
    assert torch.allclose(c_noise_t, t) and torch.allclose(c_skip_t, 1 - t)
    assert torch.allclose(c_in_t, 1 - t) and torch.allclose(c_out_t, -t)


def test_x0_formula_with_linear_stub():
    stub = LinearStub(a=1.7, b=-3.0)
    den = RectifiedFlowDenoiser(stub, CFG)
    assert den.sigma == 0.25 and den.t == pytest.approx(0.2)
    latent = torch.randn(2, 16, 2, 6, 10, dtype=torch.float64)
    x0 = den(latent)
    # By hand: x0 = 0.8 x - 0.2 * (1.7 * 0.8 x + (-3.0) * 0.2) = (0.8 - 0.272) x + 0.12
    expected = (0.8 - 0.272) * latent.float() + 0.12
    assert x0.dtype == torch.float32 and x0.shape == latent.shape
    assert torch.allclose(x0, expected, atol=1e-6, rtol=1e-6)

    ((x_in, timesteps, ctx, mask),) = stub.calls
    assert torch.allclose(x_in, 0.8 * latent.float())
    assert timesteps.shape == (2, 1) and torch.equal(timesteps, torch.full((2, 1), 0.2))  # DiT timestep = t = 0.2
    assert ctx.shape == (2, 16, 32) and ctx.dtype == torch.float32 and not ctx.any()
    assert mask is None  # the DiT treats None as an all-zero padding mask


def test_stub_in_bf16_gets_bf16_inputs_and_gives_fp32_x0():
    stub = LinearStub(a=0.5, b=1.0, dtype=torch.bfloat16)
    latent = torch.randn(1, 16, 1, 4, 4)
    x0 = RectifiedFlowDenoiser(stub, CFG)(latent)
    ((x_in, timesteps, ctx, _),) = stub.calls
    assert x_in.dtype == timesteps.dtype == ctx.dtype == torch.bfloat16
    assert timesteps.item() == 0.2001953125  # bf16(0.2), as in the official pipeline
    assert x0.dtype == torch.float32
    velocity = (0.5 * x_in + timesteps.item()).float()
    assert torch.allclose(x0, 0.8 * latent - 0.2 * velocity, atol=1e-6)


def test_with_real_tiny_dit_matches_direct_call():
    torch.manual_seed(0)
    net = CosmosDiT(TINY).eval()
    den = RectifiedFlowDenoiser(net, CFG)
    assert set(den.state_dict()) == {f"net.{k}" for k in net.state_dict()}
    latent = torch.randn(1, 16, 2, 6, 10)
    with torch.no_grad():
        x0 = den(latent)
        direct = net(0.8 * latent, torch.tensor([0.2]), torch.zeros(1, 16, 32), torch.zeros(1, 1, 48, 80))
    assert torch.allclose(x0, 0.8 * latent - 0.2 * direct, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shape", [(16, 2, 6, 10), (1, 4, 2, 6, 10), (1, 16, 2, 6, 10, 1)])
def test_bad_latent(shape):
    den = RectifiedFlowDenoiser(LinearStub(1.0, 0.0), CFG)
    with pytest.raises(ValueError, match="latent must be"):
        den(torch.zeros(shape))
