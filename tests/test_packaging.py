"""A non-editable install works: build the wheel, install it into a folder, and use it from a process
that sees that folder and NOT the source tree (issue 14: presets and kernels used to be missing).

From the installed copy: the kernel sources and their host build, the presets, the version,
``simharmon enhance --config tiny`` on five of the bundled sample frames, and the bundled default
model on two of them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import simharmon

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "simharmon", "kernels", "configs"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")

# Run inside the installed copy: where things come from, and that the source tree is out of reach.
CHECK = """
import importlib.metadata, json, sys
from pathlib import Path
site, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
assert not any(Path(p or ".").resolve() in (repo, repo / "simharmon") for p in sys.path), sys.path
import simharmon
import simharmon.cli
from simharmon.config import load_config, preset_path
from simharmon.ops import _host
from simharmon.ops._sources import kernel_modules, kernel_source, kernels_dir
print(json.dumps({
    "package": simharmon.__file__, "kernels_dir": str(kernels_dir()), "modules": kernel_modules(),
    "fuse_inlined": "from_f32" in kernel_source("fuse") and '#include "' not in kernel_source("fuse"),
    "tiny": str(preset_path("tiny")), "tiny_name": load_config("tiny").name,
    "cosmos": str(preset_path("cosmos-0.6b")), "version": importlib.metadata.version("simharmon"),
    "cli_version": simharmon.cli.package_version(),
    "host_warp": str(_host._build("warp", kernels_dir())) if _host.host_kernels_available() else None,
}))
"""


def _build_isolation_flag():
    """Build with this interpreter's setuptools when it has one recent enough (no network needed)."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return []  # pip's isolated build fetches setuptools from the package index
    return ["--no-build-isolation"] if major >= 68 else []


def _run(cmd, cwd, env, timeout=300):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder, environment) of the wheel installed with ``pip install --no-deps --target``."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # a copy: building in place would write build/ and *.egg-info into the checkout
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=IGNORE)
        else:
            shutil.copy2(path, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SIMHARMON_KERNELS_DIR")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", *_build_isolation_flag(), "-q", "-w", str(tmp / "dist"), str(src)], tmp, env,
         timeout=600)
    wheels = list((tmp / "dist").glob("simharmon-*.whl"))
    assert len(wheels) == 1, wheels
    site = tmp / "site"
    _run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheels[0])], tmp, env)
    env.update(PYTHONPATH=str(site), SIMHARMON_CACHE_DIR=str(tmp / "cache"), PYTHONUNBUFFERED="1")
    return site, env, wheels[0]


def test_wheel_contents(installed):
    _, _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in [*REPO.glob("kernels/*.cu"), *REPO.glob("kernels/*.cuh"), *REPO.glob("kernels/host/*.hpp")]:
        assert f"simharmon/{path.relative_to(REPO)}" in names
    for path in REPO.glob("configs/*.yaml"):
        assert f"simharmon/configs/{path.name}" in names
    assert "simharmon/data/default_model/MODEL_CARD.md" in names
    assert not any(n.startswith(("tests/", "kernels/", "configs/")) for n in names)


def test_lookups_and_version_from_the_installed_copy(installed, tmp_path):
    site, env, _ = installed
    out = _run([sys.executable, "-c", CHECK, str(site), str(REPO)], tmp_path, env).stdout
    info = json.loads(out.strip().splitlines()[-1])
    package = site / "simharmon"
    assert Path(info["package"]).parent == package
    assert Path(info["kernels_dir"]) == package / "kernels"
    assert {"fuse", "pack", "reproject", "warp"} <= set(info["modules"]) and info["fuse_inlined"]
    assert Path(info["tiny"]) == package / "configs" / "tiny.yaml" and info["tiny_name"] == "tiny"
    assert Path(info["cosmos"]) == package / "configs" / "cosmos-0.6b.yaml"
    assert info["version"] == info["cli_version"] == simharmon.__version__  # from the wheel's metadata
    if info["host_warp"] is not None:  # the host build of the kernels works from the wheel's own sources
        assert Path(info["host_warp"]).is_file()


def test_enhance_tiny_on_the_bundled_sample_frames(installed, tmp_path):
    site, env, _ = installed
    frames = site / "simharmon" / "data" / "sample_frames"
    _run([sys.executable, "-m", "simharmon", "enhance", str(frames), "--out", str(tmp_path / "out"), "--config", "tiny",
          "--device", "cpu", "--no-progress", "--max-frames", "5"], tmp_path, env)  # past the 4-frame history
    written = sorted(p.name for p in (tmp_path / "out" / "frames").glob("*.png"))
    assert written == sorted(p.name for p in frames.glob("*.png"))[:5]


def test_bundled_default_model_from_the_installed_copy(installed, tmp_path):
    site, env, _ = installed
    frames = site / "simharmon" / "data" / "sample_frames"
    out = tmp_path / "out"
    _run([sys.executable, "-m", "simharmon", "enhance", str(frames), "--out", str(out), "--max-frames", "2",
          "--device", "cpu", "--no-progress"], tmp_path, env)
    assert len(list((out / "frames").glob("*.png"))) == 2
    run = json.loads((out / "run.json").read_text())
    assert str(site / "simharmon" / "data" / "default_model") in json.dumps(run), run
