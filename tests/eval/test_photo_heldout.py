"""The real-photo held-out set: split by photo, deterministic composites, detail and flicker measures."""

import numpy as np

from simharmon.data.photo_sources import photo_sources
from simharmon.eval.photo_heldout import (
    heldout_photos,
    heldout_sequences,
    laplacian_energy,
    masked_warping_error,
    photo_heldout_composites,
    photo_targets,
    score_photo_heldout,
    sequence_flicker,
)


def test_composites_come_only_from_heldout_photos_and_are_deterministic():
    names = {name for name, _ in heldout_photos()}
    assert names == {p["name"] for p in photo_sources("heldout")}
    assert not names & {p["name"] for p in photo_sources("train")}
    a = photo_heldout_composites(1, sizes=((128, 80),), photos=2)
    b = photo_heldout_composites(1, sizes=((128, 80),), photos=2)
    assert [s.name for s in a] == [s.name for s in b] and all(np.array_equal(x.composite, y.composite)
                                                              for x, y in zip(a, b))


def test_laplacian_energy_written_out():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)
    mask = np.zeros((20, 24), np.uint8)
    mask[5:15, 6:18] = 255
    x = image.astype(np.float64)
    lap = -4 * x[1:-1, 1:-1] + x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:]
    inner = lap[5 + 2 - 1:15 - 2 - 1, 6 + 2 - 1:18 - 2 - 1]  # mask eroded by 2, in the interior's coordinates
    assert np.isclose(laplacian_energy(image, mask), (inner ** 2).mean())
    assert laplacian_energy(image, np.zeros_like(mask)) == 0.0
    flat = np.full_like(image, 100)
    assert laplacian_energy(flat, mask) == 0.0


def test_identity_scores_and_targets():
    samples = photo_heldout_composites(1, sizes=((128, 80),), photos=3)
    result = score_photo_heldout(samples, lambda composite, mask: composite)
    overall = result["summary"]["overall"]
    assert overall["count"] == 3 and overall["fmse_ratio_to_input"] == 1.0 and overall["beats_input_share"] == 0.0
    assert not photo_targets(overall)["fmse_at_most_half_of_input"]
    truth = score_photo_heldout(samples, lambda composite, mask: next(
        s.target for s in samples if s.composite is composite))["summary"]["overall"]
    assert truth["fmse"]["model"] == 0.0 and truth["laplacian_ratio"] == 1.0 and photo_targets(truth)[
        "beats_input_on_90_percent"]


def test_masked_flicker_of_truth_is_small_and_of_jittered_input_larger():
    seq = heldout_sequences(1, size=(128, 80), frames=4)[0]
    truth = masked_warping_error(seq.targets, seq.masks, seq.flow_fw, seq.flow_bw)
    jittered = masked_warping_error(seq.frames, seq.masks, seq.flow_fw, seq.flow_bw)
    assert truth < jittered
    flicker = sequence_flicker([seq], lambda frames, masks, history: seq.targets if history else frames)
    assert flicker["ratio_sequence_to_frame_by_frame"] == truth / jittered
