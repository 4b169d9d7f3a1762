"""LPIPS and DINO-Struct-Dist: only from local weight files, checked on random weights saved to disk."""

import numpy as np
import pytest
import torch
import torchvision

from simharmon.eval.perceptual import LPIPS, DinoStructDistance

CHANNELS = (64, 192, 384, 256, 256)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), folder / "alexnet.pth")
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}
    torch.save(heads, folder / "alex_heads.pth")
    return folder / "alexnet.pth", folder / "alex_heads.pth", heads


def _images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    return a, np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)


def _reference_lpips(backbone_path, heads, a, b):
    """LPIPS written out independently: ReLU outputs at features[1, 4, 7, 9, 11] via hooks."""
    net = torchvision.models.alexnet(weights=None)
    net.load_state_dict(torch.load(backbone_path))
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(image):
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 * 2 - 1
        x, out = (x - shift) / scale, []
        for index, layer in enumerate(net.features[:12]):
            x = layer(x)
            if index in (1, 4, 7, 9, 11):
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    with torch.no_grad():
        return sum(float(((fa - fb) ** 2 * heads[f"lin{k}.model.1.weight"]).sum(1).mean())
                   for k, (fa, fb) in enumerate(zip(taps(a), taps(b))))


def test_lpips_matches_an_independent_computation(lpips_files):
    backbone, head_file, heads = lpips_files
    metric = LPIPS(backbone, head_file)
    a, b = _images()
    assert metric.net == "alex"
    assert metric(a, a) == 0.0
    assert metric(a, b) == pytest.approx(_reference_lpips(backbone, heads, a, b), rel=1e-5)
    assert metric(a, b) == pytest.approx(metric(b, a), rel=1e-6) and metric(a, b) > 0


def test_lpips_needs_real_files(tmp_path, lpips_files):
    backbone, head_file, _ = lpips_files
    with pytest.raises(FileNotFoundError):
        LPIPS(tmp_path / "none.pth", head_file)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "bad_heads.pth")
    with pytest.raises(ValueError, match="LPIPS head"):
        LPIPS(backbone, tmp_path / "bad_heads.pth")
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, tmp_path / "not_alexnet.pth")
    with pytest.raises(ValueError, match="alex"):
        LPIPS(tmp_path / "not_alexnet.pth", head_file)


def _dino_state(dim=64, depth=2, patch=8, grid=4, hidden=128):
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.05

    state = {"patch_embed.proj.weight": rand(dim, 3, patch, patch), "patch_embed.proj.bias": rand(dim),
             "cls_token": rand(1, 1, dim), "pos_embed": rand(1, 1 + grid * grid, dim),
             "norm.weight": torch.ones(dim), "norm.bias": torch.zeros(dim)}
    for i in range(depth):
        state.update({f"blocks.{i}.norm1.weight": torch.ones(dim), f"blocks.{i}.norm1.bias": torch.zeros(dim),
                      f"blocks.{i}.attn.qkv.weight": rand(3 * dim, dim), f"blocks.{i}.attn.qkv.bias": rand(3 * dim),
                      f"blocks.{i}.attn.proj.weight": rand(dim, dim), f"blocks.{i}.attn.proj.bias": rand(dim),
                      f"blocks.{i}.norm2.weight": torch.ones(dim), f"blocks.{i}.norm2.bias": torch.zeros(dim),
                      f"blocks.{i}.mlp.fc1.weight": rand(hidden, dim), f"blocks.{i}.mlp.fc1.bias": rand(hidden),
                      f"blocks.{i}.mlp.fc2.weight": rand(dim, hidden), f"blocks.{i}.mlp.fc2.bias": rand(dim)})
    return state


def test_dino_struct_distance(tmp_path):
    torch.save({"teacher": {f"backbone.{k}": v for k, v in _dino_state().items()}}, tmp_path / "dino.pth")
    metric = DinoStructDistance(tmp_path / "dino.pth", short_side=32)
    a, b = _images()
    similarity = metric.self_similarity(a)
    assert similarity.shape == (1 + 4 * 5, 1 + 4 * 5)  # 32x44 -> 4x5 patches of 8, plus CLS
    assert torch.allclose(similarity.diagonal(), torch.ones(21), atol=1e-5)
    assert metric(a, a) == 0.0 and metric(a, b) > 0
    assert metric(a, 255 - a) > metric(a, b)


def test_dino_rejects_other_files(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="DINO"):
        DinoStructDistance(tmp_path / "other.pth")
