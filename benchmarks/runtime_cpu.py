"""The bundled model through the front doors users run, on the CPU: the one runtime against the landed eager path.

    python benchmarks/runtime_cpu.py                 # writes benchmarks/results/runtime-cpu-<yyyymmdd>[-N].json
    python benchmarks/runtime_cpu.py --smoke         # a few frames, prints the JSON, writes nothing

Cases, all with the bundled default model at 256x144 (its masks read), float renders / rgb8 frames
with an actor mask, ``--threads`` torch threads (default 2), one process per (implementation, case):

- ``engine``: the bare engine step (``Engine.step_many``), 1 stream and 4 independent streams;
- ``hook``: ``PostRenderHook`` on a render tuple ``(image, depth, mask)``, 1 camera and 4 cameras;
- ``serve-shm`` / ``serve-tcp``: ``simharmon serve`` (in a subprocess) and a ``BridgeClient`` over
  shared memory / inline tcp, 1 stream and 4 streams (submitted together, then collected);
- ``engine-compile``: the bare engine step with backend ``compile`` (inductor), 1 stream.

"landed" is the eager path this project shipped before the one-runtime rewrite (commit
``LANDED_COMMIT``): ``MultiStreamEnhancer`` behind ``simharmon serve`` and in-process calls (its hook
could not pass masks, so its in-process case is the ``step_many`` the hook wraps). It runs from a
git worktree of that commit in the same run, the two implementations alternating case by case,
``--rounds`` times, so both see the same machine load; each case's latency is the median over
rounds of the per-round medians. ``ratio`` = landed p50 / new p50 (>= 1: the new path is at least
as fast). Latency per tick: the time from submitting the tick's frames to having all results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
LANDED_COMMIT = "753b351"  # main before the one-runtime rewrite (issue 11)
WORKER = Path(__file__).resolve().parent / "_runtime_cpu_worker.py"
CASES = ("engine", "hook", "serve-shm", "serve-tcp")


def landed_tree(path: Path) -> Path:
    """A worktree of the landed commit (created once)."""
    if not (path / "simharmon").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(path), LANDED_COMMIT],
                       check=True, capture_output=True)
    return path


def run_worker(impl: str, case: str, streams: int, args, tree: Path) -> Dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(args.threads))
    command = [sys.executable, str(WORKER), "--impl", impl, "--case", case, "--streams", str(streams),
               "--frames", str(args.frames), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    done = subprocess.run(command, cwd=str(tree), env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} {case} x{streams} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_average() -> List[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main(argv=None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="timed ticks per case and round")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--landed-tree", type=Path, default=Path("/tmp/simharmon-landed"))
    parser.add_argument("--smoke", action="store_true", help="3 frames, 1 round; print, write nothing")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile case (minutes of inductor)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.frames, args.warmup, args.rounds = 3, 1, 1
    trees = {"new": REPO, "landed": landed_tree(args.landed_tree)}
    started = time.time()
    loads = [load_average()]
    samples: Dict[str, Dict[str, List[dict]]] = {}
    for _ in range(args.rounds):
        for case in CASES:
            for streams in (1, 4):
                for impl in ("new", "landed"):
                    key = f"{case} x{streams}"
                    samples.setdefault(key, {}).setdefault(impl, []).append(
                        run_worker(impl, case, streams, args, trees[impl]))
                    print(f"{key} {impl}: p50 {samples[key][impl][-1]['p50_ms']:.1f} ms", file=sys.stderr)
        loads.append(load_average())
    cases: Dict[str, dict] = {}
    for key, by_impl in samples.items():
        entry = {}
        for impl, runs in by_impl.items():
            entry[impl] = {"p50_ms": statistics.median(r["p50_ms"] for r in runs),
                           "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                           "fps_per_stream": statistics.median(r["fps_per_stream"] for r in runs),
                           "rounds": [r["p50_ms"] for r in runs]}
        entry["ratio_landed_over_new"] = entry["landed"]["p50_ms"] / entry["new"]["p50_ms"]
        entry["new_at_least_as_fast"] = entry["ratio_landed_over_new"] >= 1.0
        cases[key] = entry
    for streams in (1, 4):  # front-door overhead over the bare engine step, new runtime
        bare = cases[f"engine x{streams}"]["new"]["p50_ms"]
        for door in ("hook", "serve-shm", "serve-tcp"):
            cases[f"{door} x{streams}"]["new"]["overhead_over_engine_ms"] = cases[f"{door} x{streams}"]["new"][
                "p50_ms"] - bare
    compile_ratio = None
    if not args.no_compile:
        eager = run_worker("new", "engine", 1, args, REPO)
        compiled = run_worker("new", "engine-compile", 1, args, REPO)
        compile_ratio = {"eager_p50_ms": eager["p50_ms"], "compile_p50_ms": compiled["p50_ms"],
                         "compile_over_eager": compiled["p50_ms"] / eager["p50_ms"],
                         "compile_build_s": compiled.get("build_s")}
    loads.append(load_average())
    report = {
        "benchmark": "runtime_cpu", "date": dt.date.today().isoformat(), "landed_commit": LANDED_COMMIT,
        "command": "python benchmarks/runtime_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": "bundled default (simharmon-default), 256x144, masks read", "threads": args.threads,
        "frames_per_case": args.frames, "warmup": args.warmup, "rounds": args.rounds,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average_1_5_15": loads,
                 "seconds": round(time.time() - started, 1)},
        "cases": cases, "compile": compile_ratio,
        "all_at_least_as_fast": all(c["new_at_least_as_fast"] for c in cases.values()),
    }
    text = json.dumps(report, indent=2)
    if args.smoke:
        print(text)
        return report
    out_dir = REPO / "benchmarks" / "results"
    stem = f"runtime-cpu-{dt.date.today():%Y%m%d}"
    path, n = out_dir / f"{stem}.json", 2
    while path.exists():
        path, n = out_dir / f"{stem}-{n}.json", n + 1
    path.write_text(text + "\n")
    print(text)
    print(f"written: {path}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
