"""benchmarks/default_model.py: a smoke run of the measurement and the model card it renders."""

from __future__ import annotations

import json

from benchmarks import default_model


def test_smoke_run_and_card(tmp_path, capsys):
    out = tmp_path / "smoke.json"
    assert default_model.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["heldout"]["count"] == 4
    assert set(result["heldout"]["fmse"]) == {"model", "input", "reinhard"}
    photo = result["photo_heldout"]["summary"]
    assert set(photo) == {"overall", "256x144", "512x288"} and photo["overall"]["count"] == 4
    assert len(result["photo_heldout"]["rows"]) == 4 and "laplacian_truth" in result["photo_heldout"]["rows"][0]
    assert result["temporal_flicker"]["sequence"] >= 0 and "ratio_sequence_to_frame_by_frame" in result["temporal_flicker"]
    assert result["speed"]["frames"] == 10 and result["speed"]["p50_ms"] > 0 and "load_average_before" in result["speed"]
    for name in ("photo_fmse_at_most_half_of_input", "photo_beats_input_on_90_percent", "fps_at_least_15",
                 "temporal_sequence_flicker_at_most_0.8_of_frame_by_frame", "sample_drive_every_camera_beats_input_fmse",
                 "procedural_fmse_not_above_issue7_model", "photo_laplacian_energy_at_least_0.8"):
        assert name in result["targets"], name
    assert result["targets_missed"] == sorted(k for k, v in result["targets"].items() if not v)
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"step": 2, "kind": "pair", "l2": 0.1, "foreground": 0.2, "seconds": 7.0}) + "\n")
    card = tmp_path / "CARD.md"
    default_model.write_card(out, log, default_model.bundled_weights(), card)
    text = card.read_text()
    assert f"{photo['overall']['fmse']['model']:,.1f}" in text and "sha256" in text and "Real photographs" in text
