"""A tiny curated data set and training config shared by the training tests."""

import pytest

from simharmon.data.curate import CurateConfig, curate, load_sources
from simharmon.train.config import TrainConfig

PER_FRAME = {"stream": {"layout": "per_frame", "offsets": [1, 2], "history": "partial"}}


@pytest.fixture(scope="session")
def curated(tmp_path_factory):
    """3 procedural 64x48 scenes: ISP pairs and one 4-frame temporal sequence (48x32 crops) each."""
    out = tmp_path_factory.mktemp("curated")
    sources = load_sources(None, None, procedural=3, procedural_size=(64, 48))
    curate(sources, out, CurateConfig(recipes=("isp",), temporal=1, temporal_frames=4, test_fraction=0.0),
           progress=False)
    return out


@pytest.fixture()
def make_config(curated, tmp_path):
    """TrainConfig factory for the tiny per-frame model on 48x32 crops, without perceptual loss."""

    def make(**changes):
        base = dict(manifest=str(curated / "manifest.json"), temporal_manifest=str(curated / "temporal.json"),
                    crop=(48, 32), model="tiny", model_overrides=PER_FRAME, steps=4, pretrain_steps=1,
                    temporal_every=2, temporal_frames=3, batch_size=2, lr=1e-3, perceptual_weight=0.0,
                    ema_decay=0.9, out=str(tmp_path / "run"), checkpoint_every=100, device="cpu")
        base.update(changes)
        return TrainConfig(**base)

    return make
