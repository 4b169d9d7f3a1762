"""What a replay writes after enhancing: metrics, plots, videos, the HTML report and an optional MCAP.

All of it is derived from the enhanced PNGs on disk and the drive, so a resumed run writes the
same files as an uninterrupted one (only the latency numbers differ, being measurements).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..eval.baselines import reinhard_transfer
from ..eval.evaluate import evaluate_drive, one_thread
from ..eval.plots import write_plots
from ..eval.report import write_report
from ..eval.summary import summarize, write_rows_csv, write_rows_json, write_summary
from ..io.drive import Drive
from ..io.frame_sources import load_image_rgb
from ..io.mcap_write import write_mcap
from ..io.video import write_mp4

__all__ = ["write_outputs", "side_by_side_frames", "COLUMN_LABELS"]

COLUMN_LABELS = ("input", "reinhard", "enhanced", "ground truth")
_LABEL_HEIGHT = 14


def _label_strip(width: int, text: str) -> np.ndarray:
    strip = Image.new("RGB", (width, _LABEL_HEIGHT), (24, 24, 24))
    ImageDraw.Draw(strip).text((4, 1), text, fill=(235, 235, 235))  # PIL's built-in bitmap font
    return np.asarray(strip)


def side_by_side_frames(drive: Drive, outputs: Dict[str, Sequence[Path]]) -> Iterator[np.ndarray]:
    """Frames of the side-by-side video: one row per camera, columns input | reinhard | enhanced | gt.

    Rows are padded to the widest camera; the video is as long as the shortest camera's outputs.
    """

    cameras = [c for c in outputs if outputs[c]]
    if not cameras:
        return
    length = min(len(outputs[c]) for c in cameras)
    columns = {c: ["input", "reinhard", "enhanced"] + (["ground truth"] if drive.has("gt", c) else []) for c in cameras}
    width = max(drive.camera(c).width * len(columns[c]) for c in cameras)
    iterators = {c: drive.iter_frames(c) for c in cameras}
    for index in range(length):
        rows: List[np.ndarray] = []
        for camera in cameras:
            _, name, image = next(iterators[camera])
            mask = drive.read_mask(camera, index) if drive.has("mask", camera) else None
            with one_thread():
                reinhard = reinhard_transfer(image, mask)
            tiles = {"input": image, "reinhard": reinhard, "enhanced": load_image_rgb(outputs[camera][index])}
            if "ground truth" in columns[camera]:
                tiles["ground truth"] = drive.read_gt(camera, index)
            title = drive.camera(camera).title
            labels = np.concatenate([_label_strip(t.shape[1], f"{title} {label}") for label, t in tiles.items()], axis=1)
            row = np.concatenate([labels, np.concatenate(list(tiles.values()), axis=1)], axis=0)
            if row.shape[1] < width:
                row = np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)))
            rows.append(row)
        yield np.concatenate(rows, axis=0)


def _write_videos(drive: Drive, out_dir: Path, outputs: Dict[str, Sequence[Path]], progress: bool) -> Dict[str, Path]:
    videos: Dict[str, Path] = {}
    total = sum(len(p) for p in outputs.values()) + min((len(p) for p in outputs.values()), default=0)
    bar = tqdm(total=total, unit="frame", desc="videos", disable=not progress)

    def counted(frames):
        for frame in frames:
            bar.update(1)
            yield frame

    for camera, paths in outputs.items():
        if paths:
            path = out_dir / "videos" / f"{camera}_enhanced.mp4"
            write_mp4(path, counted(load_image_rgb(p) for p in paths), drive.info.fps)
            videos[f"{drive.camera(camera).title} enhanced"] = path
    if any(outputs.values()):
        path = out_dir / "videos" / "side_by_side.mp4"
        write_mp4(path, counted(side_by_side_frames(drive, outputs)), drive.info.fps)
        videos["side by side"] = path
    bar.close()
    return videos


def write_outputs(drive: Drive, out_dir: Path, outputs: Dict[str, Sequence[Path]],
                  latency: Dict[str, Dict[str, Optional[float]]], eval_options, context: Dict[str, object],
                  mcap: bool, result, log: Callable[[str], None]) -> None:
    """Evaluate, then write metrics, plots, videos, report (and MCAP); fills ``result``'s paths."""

    if not any(outputs.values()):
        log("nothing enhanced yet: no metrics or report written")
        return
    evaluation = evaluate_drive(drive, outputs, latency, eval_options)
    titles = {c: drive.camera(c).title for c in outputs}
    drive_info = {"name": drive.info.name, "path": drive.info.path, "kind": drive.info.kind, "fps": drive.info.fps,
                  "cameras": [titles[c] for c in outputs], "frames": {titles[c]: len(p) for c, p in outputs.items()},
                  "folders": {titles[c]: c for c in outputs}}
    if drive.notes:
        drive_info["notes"] = drive.notes
    summary = summarize(evaluation, dict(context, drive=drive_info))
    metrics = out_dir / "metrics"
    write_rows_csv(metrics / "per_frame.csv", evaluation.rows)
    write_rows_json(metrics / "per_frame.json", evaluation.rows)
    write_summary(metrics / "summary.json", summary)
    plots = write_plots(evaluation.rows, out_dir / "plots")
    videos = _write_videos(drive, out_dir, outputs, eval_options.progress)
    result.summary_path = metrics / "summary.json"
    result.videos = videos
    result.report_path = write_report(out_dir / "report.html", summary, plots, videos)
    if mcap:

        enhanced = {c: (lambda paths=paths: (load_image_rgb(p) for p in paths)) for c, paths in outputs.items()}
        result.mcap_path = write_mcap(drive, out_dir / "enhanced.mcap", enhanced, progress=eval_options.progress)
