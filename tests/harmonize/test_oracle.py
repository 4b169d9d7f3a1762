"""The DiffHarmony sampler against diffusers' StableDiffusionInpaintPipeline given the same components."""

import torch
from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInpaintPipeline

from simharmon.harmonize.models.loading import DEFAULT_SCHEDULER
from simharmon.harmonize.pipeline import LatentHarmonizer, SamplerConfig

from .helpers import tiny_components

# Measured worst |ours - diffusers| on [0, 1] outputs (fp32, CPU): 0.0 (bit-identical); the
# tolerance leaves room for kernel-order differences on other CPUs.
TOLERANCE = 1e-5


def _inputs(size=64, seed=5):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    mask = torch.zeros(1, 1, size, size)
    mask[..., 16:48, 20:44] = 1.0
    return image, mask


def test_sampler_matches_diffusers_inpaint_pipeline():
    unet, vae, _, prompt = tiny_components(0)
    image, mask = _inputs()
    ours = LatentHarmonizer(unet, vae, prompt, DEFAULT_SCHEDULER)
    config = SamplerConfig(steps=5, resolution=64, seed=7)
    with torch.no_grad():
        out = ours.harmonize(image, mask, config)
        cond, _ = ours.encode_condition(image, mask)
    ours_01 = (out / 2 + 0.5).clamp(0, 1)

    scheduler = EulerAncestralDiscreteScheduler.from_config(DEFAULT_SCHEDULER)
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt_embeds=prompt, image=(image + 1) / 2, mask_image=mask, masked_image_latents=cond,
               height=64, width=64, num_inference_steps=5, guidance_scale=1.0,
               generator=torch.Generator().manual_seed(7), output_type="pt").images
    err = (ours_01 - ref).abs().max().item()
    print(f"oracle max abs error: {err:.3g}")
    assert err <= TOLERANCE
    # The test can fail: another seed gives a different image.
    with torch.no_grad():
        other = (ours.harmonize(image, mask, SamplerConfig(steps=5, resolution=64, seed=8)) / 2 + 0.5).clamp(0, 1)
    assert (other - ref).abs().max().item() > 1e-3


def test_sampler_is_deterministic_per_seed():
    unet, vae, _, prompt = tiny_components(1)
    image, mask = _inputs()
    ours = LatentHarmonizer(unet, vae, prompt, DEFAULT_SCHEDULER)
    with torch.no_grad():
        a = ours.harmonize(image, mask, SamplerConfig(resolution=64, seed=3))
        b = ours.harmonize(image, mask, SamplerConfig(resolution=64, seed=3))
    assert torch.equal(a, b)
