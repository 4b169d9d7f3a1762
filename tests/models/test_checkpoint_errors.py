"""Unreadable checkpoints: one clear line (the file, what was expected, what was found), for every
kind of damage and every suffix; advice to trust a file only for a well-formed pickle that needs it."""

from __future__ import annotations

import argparse
import io
import pickle
import struct

import numpy as np
import pytest
import torch

from simharmon.cli import main
from simharmon.models.checkpoints import CheckpointError, read_checkpoint

SUFFIXES = (".pt", ".pth", ".pkl", ".safetensors")


def torch_bytes(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


GOOD = torch_bytes({"net.x": torch.zeros(8)})
DAMAGE = {  # kind -> (file content, what the message must say was found)
    "random bytes": (np.random.default_rng(7).bytes(4096), "found unrecognised binary data (first bytes "),
    "truncated zip": (GOOD[: len(GOOD) // 2], "found a truncated or damaged zip archive"),
    "empty file": (b"", "found an empty file (0 bytes)"),
    "text file": (b"hello world\n", "found a text file (starting 'hello world\\n')"),
    "pickle of the wrong type": (torch_bytes([1, 2, 3]), "expected a mapping of names to tensors at the top level"),
    "safetensors with a corrupt header": (struct.pack("<Q", 10**9) + b'{"dit.x": {"dtype": "F32"}}',
                                          "found a safetensors header that claims 1000000000 bytes"),
}


def expected_of(kind, suffix):
    if kind == "pickle of the wrong type":  # a readable torch file: only its content is wrong
        return "found a list"
    return "expected a safetensors file" if suffix == ".safetensors" else "expected a PyTorch checkpoint"


def one_line_error(path, trusted=False) -> str:
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path, trusted=trusted)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: expected ") and "; found " in message, message
    return message


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_unreadable_checkpoint_is_one_clear_line(tmp_path, kind, suffix):
    content, found = DAMAGE[kind]
    path = tmp_path / f"model{suffix}"
    path.write_bytes(content)
    for trusted in (False, True):  # trusting a damaged file changes nothing: it is never unpickled
        message = one_line_error(path, trusted)
        assert found in message and expected_of(kind, suffix) in message, message
        assert "--trust-checkpoint" not in message and "trusted=True" not in message, message


def test_plain_pickles_and_damaged_archives_are_named(tmp_path):
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"net.x": [0.0] * 4}))
    assert "found a plain Python pickle (pickle.dump), which torch.load cannot read" in one_line_error(plain)
    not_json = tmp_path / "bad.safetensors"
    not_json.write_bytes(struct.pack("<Q", 12) + b"{not json at" + bytes(16))
    assert "found a safetensors file whose header is not valid JSON" in one_line_error(not_json)
    damaged = bytearray(GOOD)
    start = GOOD.index(b"data.pkl") + 40  # inside the pickled object of a zip whose directory is intact
    damaged[start:start + 24] = b"\xff" * 24
    path = tmp_path / "damaged.pt"
    path.write_bytes(bytes(damaged))
    message = one_line_error(path)
    assert "found a torch.save zip archive" in message and "--trust-checkpoint" not in message


@pytest.mark.parametrize("legacy", [False, True])
def test_trust_advice_only_for_a_well_formed_pickle_that_needs_it(tmp_path, legacy):
    path = tmp_path / "objects.pt"
    path.write_bytes(torch_bytes({"net.x": torch.zeros(2), "args": argparse.Namespace(lr=1)},
                                 _use_new_zipfile_serialization=not legacy))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "argparse.Namespace" in message and "--trust-checkpoint" in message
    with pytest.raises(CheckpointError) as info:  # trusted: it unpickles, then the layout check speaks
        read_checkpoint(path, trusted=True)
    assert "--trust-checkpoint" not in str(info.value) and "outside the known prefixes" in str(info.value)


def test_the_cli_prints_one_line_and_a_traceback_only_with_debug(tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_bytes(b"hello world\n")
    args = ["serve", "--weights", str(path), "--bind", "tcp://127.0.0.1:*"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"simharmon serve: error: {path}: expected a PyTorch checkpoint (a torch.save zip "
                                "archive, or a legacy torch.save pickle); found a text file (starting 'hello world\\n')"]
    for debug in (["--debug", *args], [*args, "--debug"]):  # before or after the command
        assert main(debug) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and err.strip().endswith("(starting 'hello world\\n')")


def test_every_torch_file_reader_shares_the_check(tmp_path):
    """Training checkpoints, LPIPS/DINO and RAFT weights go through the same byte check."""
    from simharmon.eval.flow import RaftFlow
    from simharmon.eval.perceptual import load_state_file
    from simharmon.train.trainer import export_checkpoint

    junk = tmp_path / "step_00000010.pt"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"expected a simharmon training checkpoint .*; found unrecognised"):
        export_checkpoint(junk, tmp_path / "out.safetensors")
    for load in (lambda: load_state_file(junk, "LPIPS"), lambda: RaftFlow(junk)):
        with pytest.raises(ValueError, match=r"cannot read (LPIPS|RAFT) weights: .*; found unrecognised binary data"):
            load()
