"""The real photographs of the ``photo`` recipe: which Debian package each comes from, its licence, its split.

``photo_sources.json`` (beside this module) lists every photo with its package, version, file inside
the package, author, licence (as the package's ``debian/copyright`` states it) and split
(``train`` or ``heldout``). ``fetch_photos`` brings them onto disk with the ordinary Debian client::

    python -m simharmon.data.photo_sources --out data/photos      # apt-get download + dpkg-deb -x

It writes ``OUT/train/<name>.jpg`` and ``OUT/heldout/<name>.jpg`` (downscaled so the longer side is at
most ``max_side``), ``OUT/SOURCES.json`` (the list, with the written files) and each package's
copyright file under ``OUT/copyright/``. The held-out photos are also committed, smaller, in
``simharmon/data/heldout_photos/`` so that evaluation needs no download.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from PIL import Image

from ..io.atomic import atomic_path, atomic_write_json

__all__ = ["SOURCES_FILE", "SPLITS", "photo_sources", "fetch_photos", "save_downscaled"]

SOURCES_FILE = Path(__file__).resolve().parent / "photo_sources.json"
SPLITS = ("train", "heldout")


def photo_sources(split: Optional[str] = None) -> List[Dict[str, str]]:
    """The photo list (optionally one split), each ``{name, package, version, file, author, licence, split}``."""
    photos = json.loads(SOURCES_FILE.read_text())["photos"]
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        photos = [p for p in photos if p["split"] == split]
    return photos


def save_downscaled(source: Path, target: Path, max_side: int, quality: int = 95) -> tuple:
    """Write ``source`` as an RGB JPEG whose longer side is at most ``max_side`` (Lanczos); returns (w, h)."""
    with Image.open(source) as picture:
        picture = picture.convert("RGB")
        scale = min(1.0, max_side / max(picture.size))
        if scale < 1.0:
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.LANCZOS)
        with atomic_path(target) as tmp:
            picture.save(tmp, format="JPEG", quality=quality, subsampling=0)
        return picture.size


def _run(command: List[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def fetch_photos(out: Path, max_side: int = 2048, splits=SPLITS) -> Path:
    """Download the listed packages (``apt-get download``), extract the photos, write them downscaled.

    Returns the path of ``OUT/SOURCES.json``. Needs ``apt-get`` and ``dpkg-deb`` (Debian/Ubuntu).
    """
    out = Path(out)
    photos = [p for p in photo_sources() if p["split"] in splits]
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"fetching the photos needs {tool} (a Debian-based system)")
    packages = sorted({(p["package"], p["version"]) for p in photos})
    written = []
    with tempfile.TemporaryDirectory(prefix="simharmon-photos-") as tmp:
        work = Path(tmp)
        for package, version in packages:
            _run(["apt-get", "download", f"{package}={version}"], work)
            debs = sorted(work.glob(f"{package}_*.deb"))
            if not debs:
                raise RuntimeError(f"apt-get download {package}={version} wrote no .deb")
            tree = work / package
            _run(["dpkg-deb", "-x", str(debs[0]), str(tree)], work)
            copyright_file = tree / "usr" / "share" / "doc" / package / "copyright"
            if copyright_file.is_file():
                (out / "copyright").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(copyright_file, out / "copyright" / f"{package}.copyright")
            for photo in (p for p in photos if p["package"] == package):
                source = tree / photo["file"]
                if not source.is_file():
                    raise FileNotFoundError(f"{package}={version} has no {photo['file']}")
                target = out / photo["split"] / f"{photo['name']}.jpg"
                width, height = save_downscaled(source, target, max_side)
                written.append({**photo, "path": target.relative_to(out).as_posix(), "width": width, "height": height})
    manifest = out / "SOURCES.json"
    atomic_write_json(manifest, {"about": json.loads(SOURCES_FILE.read_text())["about"], "photos": written})
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    parser.add_argument("--max-side", type=int, default=2048, help="longer side of the written photos (default 2048)")
    parser.add_argument("--split", choices=SPLITS, action="append", help="only this split (repeatable; default both)")
    args = parser.parse_args(argv)
    manifest = fetch_photos(args.out, args.max_side, tuple(args.split or SPLITS))
    count = len(json.loads(manifest.read_text())["photos"])
    print(f"wrote {count} photos and {manifest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
