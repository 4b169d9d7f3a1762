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
    assert result["speed"]["frames"] == 10 and result["speed"]["p50_ms"] > 0
    assert set(result["targets"]) == {"heldout_fmse_at_most_half_of_input", "heldout_fmse_below_reinhard",
                                      "heldout_psnr_above_reinhard", "sample_drive_warping_error_not_above_input",
                                      "fps_at_least_10"}
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"step": 2, "kind": "pair", "l2": 0.1, "foreground": 0.2, "seconds": 7.0}) + "\n")
    card = tmp_path / "CARD.md"
    default_model.write_card(out, log, default_model.bundled_weights(), card)
    text = card.read_text()
    assert f"{result['heldout']['fmse']['model']:,.1f}" in text and "sha256" in text
