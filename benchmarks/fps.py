"""Frames-per-second benchmark of the enhancer (issue 3), everything measured side by side in one process.

    python -m benchmarks.fps                      # cosmos-0.6b, random bf16 weights, 1024x576, CUDA
    python -m benchmarks.fps --smoke              # tiny config on the CPU in seconds (CI); not a result

Cases (``--cases``; names in the JSON):
  release_loop    (a) the release's per-frame loop re-implemented: encode the 5-frame clip, DiT on
                  2 latent frames with cross-attention, decode all 5 frames, eager
  plain           the engine with every optimization off, eager
  exact           (b) the engine, release layout, K = 4 (V = 5), once per ``--backends`` entry
                  (eager, compile, cudagraph = compiled step captured, cudagraph_eager, tensorrt)
  v1              the engine with no history (V = 1), ``--best`` backend
  per_frame       the engine, per-frame layout with a ring of 4 latents, ``--best`` backend
  cameras         (c) ``--cameras`` streams batched, release layout, ``--best`` backend
  front_doors     one engine (``--best`` backend, per-frame layout) through the doors users run: the
                  bare step (``Engine.step_many``), the in-process ``PostRenderHook`` on device renders,
                  and ``simharmon serve``'s server (a thread of this process, same engine) with a client
                  over shared memory and over tcp; each reported as overhead over the bare step
Each case: per-stage ms, p50/p90/p99 over ``--frames`` frames after ``--warmup``, FPS, peak
memory, FLOPs per step (counted on the meta device), achieved TFLOP/s and the gap to the floor
(exact-step FLOPs over the bf16 matmul rate measured here). GPU times come from CUDA events.
Writes ``benchmarks/results/<gpu>-<yyyymmdd>.json`` (``--merge`` adds to an existing file).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from simharmon.bridge.client import BridgeClient
from simharmon.bridge.config import ClientConfig, ServerConfig
from simharmon.bridge.server import BridgeServer
from simharmon.config import EngineConfig, OptimizationConfig, StreamConfig, load_config, preset_path
from simharmon.hooks import PostRenderHook
from simharmon.io.pixels import frame_to_model, quantize_like_release, uint8_hwc_to_frame
from simharmon.models.enhancer import DTYPES, build_enhancer
from simharmon.ops import pack, unpack
from simharmon.runtime import stages
from simharmon.runtime.backends import BackendUnavailable, require_backend
from simharmon.runtime.engine import Engine
from simharmon.runtime.flops import engine_step_flops, meta_model, release_loop_flops
from simharmon.runtime.timing import Clock, measure_ceilings, percentiles

RESULTS = Path(__file__).resolve().parent / "results"
ALL_CASES = ("release_loop", "plain", "exact", "v1", "per_frame", "cameras", "front_doors")
# HARMONIZER.md, for comparison only: measured/derived TFLOP at 1024x576 and the H100 bf16 rate.
HARMONIZER_TFLOP = {"release_encode": 15.73, "release_decode": 26.26, "release_total": 48.0,
                    "exact_total": 21.0, "h100_bf16_tflops": 798.0}  # fmt: skip
TARGETS = {"exact_p50_ms": 45.0, "speedup_vs_release": 4.5, "cameras_fps_each": 5.0}


# ----------------------------------------------------------------------------- (a) the release loop


class ReleaseLoop:
    """The release's per-frame inference, re-implemented (HARMONIZER.md "What the reference implementation does").

    Per frame: upload the 8-bit frame, ToTensor + Normalize, stack [current, t-1..t-4] on the time
    axis once 4 outputs exist, encode the whole clip, run the DiT (cross-attention included) on
    every latent frame, decode EVERY latent frame, keep frame 0, quantize like ToPILImage, download.
    The release writes its outputs as PNGs and re-reads them as references; here the quantized
    references stay on the device (same values, no disk I/O, so this baseline is if anything faster).
    """

    def __init__(self, model, num_refs: int = 4) -> None:
        self.model, self.num_refs = model, num_refs
        self.refs: List[torch.Tensor] = []

    @torch.inference_mode()
    def step(self, frame: np.ndarray, clock: Clock):
        """frame: uint8 [1, H, W, 3] on the host -> (uint8 [1, H, W, 3] host, stage times ms)."""
        model = self.model
        marks = [clock.mark()]
        x = torch.from_numpy(frame).to(model.device)
        marks.append(clock.mark())
        image = frame_to_model(uint8_hwc_to_frame(x), model.dtype)
        if len(self.refs) >= self.num_refs:
            clip = torch.stack([image, *self.refs[::-1][: self.num_refs]], dim=2)
        else:
            clip = image.unsqueeze(2)
        latents = model.encode(clip)
        marks.append(clock.mark())
        x0 = model.denoise(latents)
        marks.append(clock.mark())
        video = model.decode(x0.to(model.dtype))
        marks.append(clock.mark())
        out = quantize_like_release(video[:, :, 0].float() * 0.5 + 0.5)
        self.refs = (self.refs + [frame_to_model(out, model.dtype)])[-self.num_refs:]
        host = out.mul(255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu()
        marks.append(clock.mark())
        names = ("upload", "encode", "dit", "decode", "download")
        return host, {n: clock.ms(a, b) for n, a, b in zip(names, marks[:-1], marks[1:])}


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass
class Setup:
    """What every case shares: arguments, device, the model, input frames, FLOP floor, ceilings."""

    args: argparse.Namespace
    device: torch.device
    dtype: torch.dtype
    model: object
    frames: List[np.ndarray]  # uint8 [cameras, H, W, 3] pool, rotated through
    exact_flops: float  # FLOPs of the exact N=1 release step: the floor's numerator
    ceilings: Dict[str, float]


def make_frames(count: int, cameras: int, height: int, width: int, seed: int = 0) -> List[np.ndarray]:
    """Random 8-bit frames (not zeros: METHOD.md), a small pool the cases rotate through."""
    gen = np.random.default_rng(seed)
    return [gen.integers(0, 256, size=(cameras, height, width, 3), dtype=np.uint8) for _ in range(count)]


def summarize(setup: Setup, name: str, latencies: List[float], host: List[float], stages: Dict[str, float],
              flops: float, cameras: int, extra: dict) -> dict:  # fmt: skip
    """A case's JSON entry: latency percentiles, stages, FPS, FLOPs, achieved rate, floors, memory."""
    lat = percentiles(latencies)
    p50_s = lat["p50"] / 1000
    rate = setup.ceilings["matmul_tflops"] * 1e12
    # The floor: the exact release step's FLOPs (per camera) at the measured matmul rate; "own" uses
    # this case's FLOPs instead (different for V = 1, the per-frame layout and the release loop).
    floor_ms = setup.exact_flops * cameras / rate * 1000
    own_floor_ms = flops / rate * 1000
    result = {
        "name": name, "cameras": cameras, "latency_ms": lat, "host_latency_ms": percentiles(host),
        "stages_ms": stages, "fps_per_camera": 1.0 / p50_s, "fps_total": cameras / p50_s,
        "tflop_per_step": flops / 1e12, "achieved_tflops": flops / p50_s / 1e12,
        "floor_ms": floor_ms, "gap_to_floor": lat["p50"] / floor_ms,
        "own_floor_ms": own_floor_ms, "gap_to_own_floor": lat["p50"] / own_floor_ms,
        "matmul_tflops_measured": setup.ceilings["matmul_tflops"],
    }  # fmt: skip
    if setup.device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(setup.device) / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(setup.device) / 2**30
    result.update(extra)
    return result


def reset_memory(device: torch.device) -> None:
    """Free what earlier cases left and restart the peak-memory counter."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def run_release_loop(setup: Setup) -> tuple:
    """Case (a): returns (result dict, the first ``check_frames`` outputs)."""
    args, clock = setup.args, Clock(setup.device)
    reset_memory(setup.device)
    loop = ReleaseLoop(setup.model)
    latencies, host, stages = [], [], {k: [] for k in ("upload", "encode", "dit", "decode", "download")}
    outputs = []
    for i in range(args.warmup + args.frames):
        frame = setup.frames[i % len(setup.frames)][:1]
        start = time.perf_counter()
        out, times = loop.step(frame, clock)
        elapsed = (time.perf_counter() - start) * 1000
        if i < args.check_frames:
            outputs.append(out)
        if i >= args.warmup:
            latencies.append(sum(times.values()))
            host.append(elapsed)
            for k, v in times.items():
                stages[k].append(v)
    cfg = setup.model.config
    flops = release_loop_flops(meta_model(cfg), args.width, args.height, cfg.stream.num_refs)["total"]["total"]
    extra = {"kind": "release_loop", "backend": "eager", "layout": "release", "num_refs": 4,
             "note": "references kept on the device (the release re-reads PNGs)"}  # fmt: skip
    result = summarize(setup, "release_loop", latencies, host, {k: statistics.median(v) for k, v in stages.items()},
                       flops, 1, extra)
    return result, outputs


def engine_backend_of(backend: str) -> tuple:
    """Benchmark backend name -> (EngineConfig.backend, cudagraph_compile); "cudagraph_eager" captures the eager step."""
    return ("cudagraph", False) if backend == "cudagraph_eager" else (backend, True)


def engine_case(setup: Setup, name: str, backend: str, *, layout: str = "release", history: str = "full",
                cameras: int = 1, optimizations: Optional[OptimizationConfig] = None) -> tuple:  # fmt: skip
    """One engine configuration: returns (result dict, the first ``check_frames`` outputs of stream 0)."""
    args = setup.args
    reset_memory(setup.device)
    stream = StreamConfig(layout=layout, offsets=(1, 2, 3, 4), history=history)
    engine_backend, compiled = engine_backend_of(backend)
    config = EngineConfig(backend=engine_backend, cudagraph_compile=compiled, dtype=args.dtype,
                          device=str(setup.device), resolutions=((args.width, args.height),),
                          max_cameras=max(cameras, 1), optimizations=optimizations or OptimizationConfig())  # fmt: skip
    build_start = time.perf_counter()
    engine = Engine(setup.model, config, stream)
    cuda = setup.device.type == "cuda"
    group = engine.open(cameras, args.width, args.height, record_timing=cuda)
    outputs = []
    if layout == "release" and history == "full" and cameras == 1:
        # Same frames and history as the release loop's first frames, for the drift check.
        outputs = [group.step(setup.frames[i % len(setup.frames)][:1]) for i in range(args.check_frames)]
    # Prime with 4 earlier frames so every timed step is the steady-state bucket (V = 5 unless history none).
    group.prime([f[:cameras] for f in setup.frames[:4]])
    latencies, host, parts = [], [], {"upload": [], "compute": [], "download": []}
    first_step_s = None  # engine build, compiles / captures, drift check, prime and the first step
    for i in range(args.warmup + args.frames):
        frames = setup.frames[(i + 4) % len(setup.frames)][:cameras]
        start = time.perf_counter()
        handle = group.submit(frames)
        handle.result()
        elapsed = (time.perf_counter() - start) * 1000
        if first_step_s is None:
            first_step_s = time.perf_counter() - build_start
        if i >= args.warmup:
            host.append(elapsed)
            if cuda:
                t = handle.timings_ms()
                latencies.append(t["total"])
                for k in parts:
                    parts[k].append(t[k])
            else:
                latencies.append(elapsed)
    num_refs = group.bucket(len(group.reference_offsets())).num_refs
    stages = {k: statistics.median(v) for k, v in parts.items() if v}
    stages.update(stage_profile(engine, group, setup))
    opts = config.optimizations
    flops = engine_step_flops(meta_model(setup.model.config), opts, layout, args.width, args.height, num_refs,
                              cameras)["total"]["total"]  # fmt: skip
    extra = {"kind": "engine", "backend": backend, "layout": layout, "num_refs": num_refs,
             "history_frames": 1 + num_refs, "optimizations": list(opts.enabled()),
             "setup_to_first_timed_step_s": first_step_s}  # fmt: skip
    result = summarize(setup, name, latencies, host, stages, flops, cameras, extra)
    del engine, group
    torch._dynamo.reset()
    return result, outputs


def front_door_cases(setup: Setup, backend: str) -> Dict[str, dict]:
    """The bare engine step, the hook and the bridge (shm, tcp) on ONE engine; overhead over the bare step.

    Host clock around each call (it includes the wait for the result), one stream, per-frame layout
    with its history, the same frames; the server runs in a thread of this process on the same engine.
    """
    args = setup.args
    reset_memory(setup.device)
    engine_backend, compiled = engine_backend_of(backend)
    stream = StreamConfig(layout="per_frame", offsets=(1, 2, 3, 4), history="partial")
    config = EngineConfig(backend=engine_backend, cudagraph_compile=compiled, dtype=args.dtype,
                          device=str(setup.device), resolutions=((args.width, args.height),))
    engine = Engine(setup.model, config, stream)
    frames = [f[0] for f in setup.frames]
    renders = [torch.from_numpy(f).to(setup.device).permute(2, 0, 1)[None].float().div(255) for f in frames]
    hook = PostRenderHook(engine, stream="hook")
    server = BridgeServer(engine, ServerConfig(bind=("tcp://127.0.0.1:*",), stats_interval_s=0.0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clients = {name: BridgeClient(ClientConfig(server.endpoints[0], sim=name, timeout_s=600.0, shared_memory=shm))
               for name, shm in (("serve_shm", True), ("serve_tcp", False))}
    sync = torch.cuda.synchronize if setup.device.type == "cuda" else (lambda: None)

    def bare(i):
        engine.step_many({"bare": torch.from_numpy(frames[i]).to(setup.device)})["bare"].output.cpu()

    def hooked(i):
        hook(renders[i])
        sync()

    def bridged(name):
        return lambda i: clients[name].enhance(frames[i], camera="cam")

    doors = {"bare_step": bare, "hook": hooked, "serve_shm": bridged("serve_shm"), "serve_tcp": bridged("serve_tcp")}
    timings: Dict[str, List[float]] = {name: [] for name in doors}
    try:
        for client in clients.values():
            client.hello()
        for i in range(args.warmup + args.frames):
            for name, door in doors.items():  # interleaved: every door sees the same machine state
                start = time.perf_counter()
                with torch.inference_mode():
                    door(i % len(frames))
                if i >= args.warmup:
                    timings[name].append((time.perf_counter() - start) * 1000)
    finally:
        for client in clients.values():
            client.close()
        server.stop()
        thread.join(30)
    bare_p50 = percentiles(timings["bare_step"])["p50"]
    return {name: {"kind": "front_door", "backend": backend, "door": name, "latency_ms": percentiles(values),
                   "overhead_over_bare_step_ms": percentiles(values)["p50"] - bare_p50,
                   "fps_per_camera": 1000.0 / percentiles(values)["p50"]}
            for name, values in timings.items()}


def stage_profile(engine: Engine, group, setup: Setup) -> Dict[str, float]:
    """encode / DiT / decode / post ms of the same step, stage by stage (``runtime.stages``) on the eager model.

    The compiled or captured step is one region, so its split is measured on the eager stages
    (keys ``*_eager``); the end-to-end numbers of the case are from the real backend.
    """
    clock, iters = Clock(setup.device), setup.args.stage_iters
    stream = engine.stream_config
    model = engine.model
    positions = group.pool.history.positions(group.slots[0])
    if setup.device.type == "cuda":
        torch.cuda.current_stream(setup.device).wait_stream(group.stream)  # the group's last step wrote the pool
    slots = torch.tensor(group.slots, device=setup.device)
    ring = group.pool.history.gather(slots)
    refs = None
    if positions:
        refs = stages.gather_entries(ring.entries, torch.tensor([positions] * len(group.slots), device=setup.device))
    frames = torch.from_numpy(setup.frames[0][:group.num_streams]).to(setup.device)
    times: Dict[str, List[float]] = {"encode_eager": [], "dit_eager": [], "decode_eager": [], "post_eager": []}
    with torch.inference_mode():
        image = pack(frames, "rgb", model.dtype)
        for i in range(iters + 2):
            m0 = clock.mark()
            if stream.layout == "release":
                latents = stages.encode_clip(model, image, refs)[0]
            else:
                current = stages.encode_current(model, image)[0].unsqueeze(2)
                latents = current if refs is None else torch.cat([current, refs.transpose(1, 2)], 2)
            m1 = clock.mark()
            x0 = stages.denoise(model, latents)
            m2 = clock.mark()
            decoded = stages.decode_current(model, x0)
            m3 = clock.mark()
            out = unpack(decoded, "rgb", "truncate")
            stages.ring_entry(model, stream, pack(out, "rgb", model.dtype), x0)
            m4 = clock.mark()
            if i >= 2:
                for key, a, b in zip(times, (m0, m1, m2, m3), (m1, m2, m3, m4)):
                    times[key].append(clock.ms(a, b))
    return {k: statistics.median(v) for k, v in times.items()}


def drift(reference: List[torch.Tensor], other: List[torch.Tensor]) -> dict:
    """How far an engine's outputs are from the release loop's on the same frames (8-bit levels)."""
    a = torch.stack([r.float() for r in reference])
    b = torch.stack([o.float().cpu() for o in other])
    mse = float(((a - b) ** 2).mean())
    return {"frames": len(reference), "max_level_diff": float((a - b).abs().max()),
            "fraction_differing": float((a != b).float().mean()),
            "psnr_db": float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)}  # fmt: skip


# ----------------------------------------------------------------------------- environment and targets


def git_commit() -> Dict[str, object]:
    """The checkout's commit and whether the tree is dirty (or SIMHARMON_COMMIT without .git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        # The GPU machine gets a copy of the tree without .git: pass SIMHARMON_COMMIT=<hash>.
        return {"commit": os.environ.get("SIMHARMON_COMMIT", "unknown"), "dirty": None}


def environment(device: torch.device) -> dict:
    """GPU name and properties (or CPU), torch / CUDA / Python versions, date, commit."""
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "date": datetime.date.today().isoformat(), **git_commit()}  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30, cuda=torch.version.cuda,
                   compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    else:
        env.update(gpu=None, cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env


def check_targets(cases: Dict[str, dict], best: str, applicable: bool = True) -> dict:
    """The issue's targets, checked on this run's numbers (None when a needed case was not run).

    applicable: False for runs the targets do not speak about (smoke runs, other configs or sizes,
    the CPU); their entries then say so and ``met`` is None.
    """
    out = {}
    exact = cases.get(f"exact_{best}")
    release = cases.get("release_loop")
    if exact:
        p50 = exact["latency_ms"]["p50"]
        out["exact_p50_ms"] = {"target": f"<= {TARGETS['exact_p50_ms']}", "measured": p50, "case": exact["name"],
                               "met": p50 <= TARGETS["exact_p50_ms"]}  # fmt: skip
    if exact and release:
        speedup = release["latency_ms"]["p50"] / exact["latency_ms"]["p50"]
        out["speedup_vs_release"] = {"target": f">= {TARGETS['speedup_vs_release']}", "measured": speedup,
                                     "met": speedup >= TARGETS["speedup_vs_release"],
                                     "same_run": exact.get("run_id") == release.get("run_id")}  # fmt: skip
    cams = next((c for n, c in cases.items() if n.startswith("cameras")), None)
    if cams:
        fps = cams["fps_per_camera"]
        out["cameras_fps_each"] = {"target": f">= {TARGETS['cameras_fps_each']} with {cams['cameras']} cameras",
                                   "measured": fps, "case": cams["name"], "met": fps >= TARGETS["cameras_fps_each"]}
    out["fast_mode_30fps"] = {"target": "stretch, >= 30 fps", "measured": None, "met": None,
                              "note": "no fast mode implemented"}  # fmt: skip
    if not applicable:
        for entry in out.values():
            entry["met"] = None
            entry["note"] = "not applicable: the targets are for cosmos-0.6b at 1024x576 on one H100"
    return out


def targets_apply(settings: dict) -> bool:
    """The issue's targets speak about cosmos-0.6b, 1024x576, bf16, on a GPU."""
    return (not settings.get("smoke") and settings.get("config") == "cosmos-0.6b" and settings.get("width") == 1024
            and settings.get("height") == 576 and str(settings.get("device", "")).startswith("cuda"))  # fmt: skip


# ----------------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command line, with the defaults of a full run or of ``--smoke``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny config on the CPU, a few frames (CI)")
    p.add_argument("--config", default=None, help="preset or YAML (default cosmos-0.6b; tiny with --smoke)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32"))
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="timed frames per case (>= 200 for results)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--stage-iters", type=int, default=None)
    p.add_argument("--check-frames", type=int, default=8, help="frames compared with the release loop")
    p.add_argument("--cases", default=",".join(ALL_CASES))
    p.add_argument("--backends", default=None,
                   help="default eager,compile,cudagraph,cudagraph_eager,tensorrt (eager with --smoke)")
    p.add_argument("--best", default=None, help="backend for v1 / per_frame / cameras (default cudagraph, eager on CPU)")
    p.add_argument("--cameras", type=int, default=None, help="streams batched in the cameras case (default 6)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<gpu>-<yyyymmdd>.json)")
    p.add_argument("--out-dir", default=None, help="directory for the default file name (e.g. $OUT on a device machine)")
    p.add_argument("--merge", action="store_true", help="add to an existing results file instead of replacing it")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="only merge these reports (e.g. one per device command) into --out; runs nothing")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default 1 with --smoke: CI machines are shared, and spinning "
                        "OpenMP threads on a loaded machine are several times slower than one)")
    args = p.parse_args(argv)
    smoke = args.smoke
    defaults = {"config": "tiny" if smoke else "cosmos-0.6b", "device": "cpu" if smoke else "cuda",
                "dtype": "float32" if smoke else "bfloat16", "width": 48 if smoke else 1024,
                "height": 32 if smoke else 576, "frames": 4 if smoke else 200, "warmup": 5 if smoke else 10,
                "stage_iters": 2 if smoke else 20, "cameras": 2 if smoke else 6,
                "backends": "eager" if smoke else "eager,compile,cudagraph,cudagraph_eager,tensorrt"}  # fmt: skip
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.best is None:
        args.best = "eager" if args.device == "cpu" else "cudagraph"
    if args.warmup < 5:
        p.error("--warmup must be >= 5 (the release loop needs 4 outputs before it runs temporally)")
    return args


def output_path(args: argparse.Namespace, env: dict) -> Path:
    """``--out``, else <out-dir or benchmarks/results>/<gpu>-<yyyymmdd>.json."""
    if args.out:
        return Path(args.out)
    gpu = env.get("gpu") or ("cpu-smoke" if args.smoke else "cpu")
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    return Path(args.out_dir or RESULTS) / f"{slug}-{datetime.date.today().strftime('%Y%m%d')}.json"


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the benchmark (see the module docstring); returns the report written to JSON."""
    args = parse_args(argv)
    if args.combine:
        if not args.out:
            sys.exit("--combine needs --out (e.g. benchmarks/results/<gpu>-<yyyymmdd>.json)")
        return combine(args.combine, Path(args.out), args.best)
    threads = args.threads if args.threads is not None else (1 if args.smoke else None)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(previous)


def _run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available: run on a GPU machine, or use --smoke for the CPU check")
    dtype = DTYPES[args.dtype]
    cases_wanted = [c for c in args.cases.split(",") if c]
    unknown = set(cases_wanted) - set(ALL_CASES)
    if unknown:
        sys.exit(f"unknown cases {sorted(unknown)}; choose from {ALL_CASES}")
    path = preset_path(args.config) if "/" not in args.config and not args.config.endswith(".yaml") else args.config
    config = load_config(path)
    env = environment(device)
    run_id = f"{env['date']}T{time.strftime('%H%M%S')}-{os.getpid()}"
    print(f"simharmon fps benchmark: {config.name} {args.width}x{args.height} {args.dtype} on {env.get('gpu') or 'CPU'}")

    torch.manual_seed(0)
    model = build_enhancer(config, seed=0, device=device, dtype=dtype)  # random weights
    ceilings = measure_ceilings(device, dtype, args.smoke)
    exact_flops = engine_step_flops(meta_model(config), OptimizationConfig(), "release", args.width, args.height,
                                    config.stream.num_refs)["total"]["total"]  # fmt: skip
    setup = Setup(args, device, dtype, model, make_frames(8, max(args.cameras, 1), args.height, args.width),
                  exact_flops, ceilings)  # fmt: skip

    cases: Dict[str, dict] = {}
    skipped: Dict[str, str] = {}
    failed: Dict[str, str] = {}
    outputs: Dict[str, list] = {}
    front: Dict[str, dict] = {}
    path_out = output_path(args, env)
    previous = json.loads(path_out.read_text()) if args.merge and path_out.exists() else {}

    def write_report() -> dict:
        """Written after every case, so a run cut short still leaves its finished cases."""
        drifts = {n: drift(outputs["release_loop"], o) for n, o in outputs.items()
                  if n != "release_loop" and "release_loop" in outputs and o}  # fmt: skip
        report = {
            "smoke": args.smoke,
            "note": ("CPU SMOKE RUN of the tiny config: checks that the benchmark runs; NOT a performance result"
                     if args.smoke else "random bf16 weights; timings from CUDA events"),
            "environment": env, "run_id": run_id,
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "merge", "combine")},
            "ceilings": ceilings,
            "flops": {"exact_step_tflop": exact_flops / 1e12, "harmonizer_md": HARMONIZER_TFLOP,
                      "floor_ms": exact_flops / (ceilings["matmul_tflops"] * 1e12) * 1000,
                      "floor_ms_at_harmonizer_rate": exact_flops / (HARMONIZER_TFLOP["h100_bf16_tflops"] * 1e12) * 1000},
        }  # fmt: skip
        for key, mine in (("cases", cases), ("skipped", skipped), ("failed", failed), ("drift_vs_release_loop", drifts),
                          ("front_doors", front)):
            report[key] = {**previous.get(key, {}), **mine}
        report["targets"] = check_targets(report["cases"], args.best, targets_apply(report["settings"]))
        path_out.parent.mkdir(parents=True, exist_ok=True)
        path_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        return report

    def record(name: str, fn: Callable[[], tuple]) -> None:
        """Run one case; a skip or failure is recorded instead of stopping the run."""
        try:
            result, outs = fn()
        except BackendUnavailable as exc:
            skipped[name] = str(exc)
            print(f"  {name}: skipped ({exc})")
            return
        except Exception as exc:  # keep the other cases' numbers; the failure is in the JSON
            failed[name] = f"{type(exc).__name__}: {exc}"
            print(f"  {name}: FAILED {failed[name]}")
            write_report()
            if args.smoke:
                raise
            return
        result["run_id"] = run_id
        cases[name], outputs[name] = result, outs
        write_report()
        lat = result["latency_ms"]
        print(f"  {name}: p50 {lat['p50']:.2f} ms  p99 {lat['p99']:.2f} ms  {result['fps_per_camera']:.1f} fps/camera")

    for backend in args.backends.split(","):
        try:
            require_backend(engine_backend_of(backend)[0], device)
        except BackendUnavailable as exc:
            skipped[f"exact_{backend}"] = str(exc)
    if "release_loop" in cases_wanted:
        record("release_loop", lambda: run_release_loop(setup))
    if "plain" in cases_wanted:
        record("plain_eager", lambda: engine_case(setup, "plain_eager", "eager", optimizations=OptimizationConfig.none()))
    if "exact" in cases_wanted:
        for backend in args.backends.split(","):
            if f"exact_{backend}" not in skipped:
                record(f"exact_{backend}", lambda b=backend: engine_case(setup, f"exact_{b}", b))
    if "v1" in cases_wanted:
        record(f"v1_{args.best}", lambda: engine_case(setup, f"v1_{args.best}", args.best, history="none"))
    if "per_frame" in cases_wanted:
        record(f"per_frame_{args.best}", lambda: engine_case(setup, f"per_frame_{args.best}", args.best,
                                                             layout="per_frame"))  # fmt: skip
    if "cameras" in cases_wanted:
        name = f"cameras{args.cameras}_{args.best}"
        record(name, lambda: engine_case(setup, name, args.best, cameras=args.cameras))
    if "front_doors" in cases_wanted:
        try:
            doors = front_door_cases(setup, args.best)
        except Exception as exc:  # the other cases' numbers stay; the failure is in the JSON
            failed["front_doors"] = f"{type(exc).__name__}: {exc}"
            if args.smoke:
                raise
        else:
            front.update(doors)
            write_report()
            for name, c in doors.items():
                print(f"  front door {name}: p50 {c['latency_ms']['p50']:.2f} ms, "
                      f"overhead over the bare step {c['overhead_over_bare_step_ms']:.2f} ms")

    print_table(write_report())
    print(f"wrote {path_out}")
    return json.loads(path_out.read_text())


def combine(paths: List[str], out: Path, best: str) -> dict:
    """Merge reports of several runs (e.g. one per device command) into one file; targets recomputed."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    merged = dict(reports[0])
    for key in ("cases", "skipped", "failed", "drift_vs_release_loop", "front_doors"):
        merged[key] = {k: v for r in reports for k, v in r.get(key, {}).items()}
    merged["runs"] = [{"run_id": r["run_id"], "environment": r["environment"], "ceilings": r["ceilings"],
                       "settings": r["settings"]} for r in reports]  # fmt: skip
    merged["targets"] = check_targets(merged["cases"], best, all(targets_apply(r["settings"]) for r in reports))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2, default=str) + "\n")
    print_table(merged)
    print(f"wrote {out}")
    return merged


def print_table(report: dict) -> None:
    """The short summary printed last (cases, targets, skips, failures, drift)."""
    print(f"\n{'case':28s} {'p50':>9s} {'p90':>9s} {'p99':>9s} {'fps/cam':>8s} {'TFLOP/s':>8s} {'gap':>6s} {'GiB':>6s}")
    for name, c in report["cases"].items():
        lat = c["latency_ms"]
        print(f"{name:28s} {lat['p50']:9.2f} {lat['p90']:9.2f} {lat['p99']:9.2f} {c['fps_per_camera']:8.2f} "
              f"{c['achieved_tflops']:8.2f} {c['gap_to_floor']:6.2f} {c.get('peak_memory_gib', float('nan')):6.2f}")
    for name, t in report["targets"].items():
        print(f"target {name}: measured {t['measured']} ({t['target']}) -> {'MET' if t['met'] else 'not met' if t['met'] is False else 'n/a'}")
    for name, why in report["skipped"].items():
        print(f"skipped {name}: {why}")
    for name, why in report.get("failed", {}).items():
        print(f"FAILED {name}: {why}")
    for name, d in report["drift_vs_release_loop"].items():
        print(f"drift {name} vs release_loop: PSNR {d['psnr_db']:.2f} dB, max level diff {d['max_level_diff']:.0f}, "
              f"{d['fraction_differing']:.2%} of values differ over {d['frames']} frames")


if __name__ == "__main__":
    main()
