"""One command for a bare GPU machine (H100/H200, torch preinstalled, no network): every GPU test,
then the kernel benchmark, then the FPS benchmark, into ONE JSON plus a log.

    make gpu-check                      # full run, <= 8 minutes
    make gpu-check ARGS=--quick         # <= 4 minutes
    python3 benchmarks/gpu_check.py [--quick] [--out DIR]

Steps, in order (each with a time limit; the first wrong result stops the run, exit code 1):
  1. gpu_tests  ``pytest -m gpu`` on every test file with gpu-marked tests: each kernel against its
                reference, the pipeline under streams / graph capture / torch.compile, the engine's
                CUDA equivalence tests. Per-test outcomes (JUnit XML) and the kernels' measured errors.
  2. kernels    ``benchmarks/kernels.py``: achieved GB/s of each kernel against the measured
                device-to-device copy bandwidth.
  3. fps        ``benchmarks/fps.py`` on the cosmos-0.6b preset at 1024x576, K = 4: the release
                loop, the exact engine and the per-frame layout side by side, >= 200 timed frames
                each (quick: 100), p50/p99, per-stage times, peak memory. Its JSON is embedded.
Without a CUDA device each step is recorded as SKIPPED (no GPU) and its CPU stand-in runs instead,
so the plumbing is still checked: the same pytest selection (every test skips), ``kernels.py
--smoke`` and ``fps.py --smoke``. Stand-ins are not results, and the JSON says so.

Wheels the machine lacks travel in ``.whl/`` (``../shared/gpu/wheels.sh``); when that folder
exists they are installed into a temporary folder first (``pip --no-index``: no network).
Writes ``benchmarks/results/gpu-check-<gpu>-<date>.json`` and ``.log`` (on the CPU:
``out/gpu-check/``; ``--out DIR`` for e.g. ``$OUT`` on a device machine) and prints where.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, TextIO

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "simharmon-gpu-check/1"
# Seconds per step (the sum stays under 8 and 4 minutes, with room for setup and the preflight).
LIMITS = {"full": {"gpu_tests": 180, "kernels": 60, "fps": 180}, "quick": {"gpu_tests": 100, "kernels": 30, "fps": 80}}
FPS_CASES = "release_loop,exact,per_frame"
FPS = {"full": {"backend": "cudagraph", "frames": 200}, "quick": {"backend": "cudagraph_eager", "frames": 100}}
GPU_MARK = re.compile(r"\bmark\.gpu\b")

# Run in the checked environment: what the steps will see (imports, CUDA, cupy, versions).
PREFLIGHT = """
import importlib, json, sys
info = {"python": sys.version.split()[0], "missing": []}
for name in ("torch", "numpy", "omegaconf", "pytest", "simharmon", "simharmon.ops"):
    try:
        importlib.import_module(name)
    except Exception as exc:
        info["missing"].append(f"{name}: {type(exc).__name__}: {exc}")
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda"] = torch.cuda.is_available()
    info["torch_cuda"] = torch.version.cuda
    if info["cuda"]:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}")
except Exception as exc:
    info["cuda"] = False
try:
    import cupy
    info["cupy"] = cupy.__version__
except Exception as exc:
    info["cupy"] = None
try:
    from simharmon.config import load_config
    from simharmon.ops import kernels_available
    load_config("cosmos-0.6b")
    info["kernels_available"] = kernels_available()
except Exception as exc:
    info["missing"].append(f"simharmon presets/ops: {type(exc).__name__}: {exc}")
print("PREFLIGHT " + json.dumps(info))
"""


class Check:
    """The run: its JSON report (rewritten after every step) and its log."""

    def __init__(self, args: argparse.Namespace, out_dir: Path, stamp: str) -> None:
        self.args = args
        self.mode = "quick" if args.quick else "full"
        self.json_path = out_dir / f"gpu-check-{stamp}.json"
        self.log_path = out_dir / f"gpu-check-{stamp}.log"
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log: TextIO = open(self.log_path, "w")
        self.work = Path(tempfile.mkdtemp(prefix="simharmon-gpu-check-"))
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.report: dict = {"schema": SCHEMA, "mode": self.mode, "started": _now(), "finished": None, "ok": None,
                             "json": str(self.json_path), "log": str(self.log_path), "limits_s": LIMITS[self.mode],
                             "environment": {}, "steps": []}  # fmt: skip
        self.cuda = False

    # -- output -------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def save(self) -> None:
        self.json_path.write_text(json.dumps(self.report, indent=1, default=str) + "\n")

    def run(self, cmd: List[str], limit_s: float) -> dict:
        """Run ``cmd`` with its output in the console and the log; kill its process group at ``limit_s``."""
        self.say(f"$ {' '.join(cmd)}")
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True)  # fmt: skip
        tail: List[str] = []

        def pump() -> None:
            for line in proc.stdout:
                sys.stdout.write(line)
                self.log.write(line)
                tail.append(line)
                del tail[:-40]
            sys.stdout.flush()
            self.log.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
        return {"command": cmd, "returncode": proc.returncode, "timed_out": timed_out,
                "seconds": round(time.monotonic() - start, 2), "output_tail": "".join(tail)[-4000:]}

    # -- set-up -------------------------------------------------------------------------------

    def install_wheels(self) -> None:
        """Install ``.whl/*`` (wheels and pure-Python sdists) into a temporary folder, offline."""
        wheels = sorted(p for p in (ROOT / ".whl").glob("*") if p.suffix in (".whl", ".gz", ".zip")) \
            if (ROOT / ".whl").is_dir() else []  # fmt: skip
        site = self.work / "site"
        paths = [str(ROOT)]
        if wheels:
            result = self.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                               "--no-cache-dir", "--no-build-isolation", "--upgrade", "--target", str(site),
                               *map(str, wheels)], 300)  # fmt: skip
            if result["returncode"] != 0:
                self.fail_setup("could not install the carried wheels in .whl/", result)
            paths.insert(0, str(site))
        self.report["environment"]["wheels"] = [p.name for p in wheels]
        self.env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
        self.env["SIMHARMON_COMMIT"] = _commit()
        self.env["SIMHARMON_CACHE_DIR"] = str(self.work / "cache")

    def preflight(self) -> None:
        result = self.run([sys.executable, "-c", PREFLIGHT], 300)
        line = next((ln for ln in result["output_tail"].splitlines() if ln.startswith("PREFLIGHT ")), None)
        info = json.loads(line[len("PREFLIGHT "):]) if line else {"missing": ["the preflight printed nothing"]}
        info.update(commit=self.env["SIMHARMON_COMMIT"], nvidia_smi=_nvidia_smi(), host=os.uname().nodename)
        self.report["environment"].update(info)
        self.cuda = bool(info.get("cuda"))
        if info["missing"] or result["returncode"] != 0:
            self.fail_setup("the environment lacks what the checks import: " + "; ".join(info["missing"]) +
                            " (carry wheels: ../shared/gpu/wheels.sh, see README 'GPU check')", result)
        if self.cuda and not info.get("kernels_available"):
            self.fail_setup("CUDA is up but the kernels are not (cupy missing, or SIMHARMON_NO_KERNELS set)", result)
        self.say(f"GPU: {info.get('gpu') or 'none'}; torch {info.get('torch')}; cupy {info.get('cupy')}; "
                 f"commit {info['commit']}")
        if not self.cuda:
            self.say("NO CUDA DEVICE: every step below is SKIPPED for lack of a GPU; its CPU stand-in runs instead "
                     "(plumbing only, not a result)")

    def fail_setup(self, why: str, result: dict) -> None:
        self.say(f"SETUP FAILED: {why}")
        self.report["steps"].append({"name": "setup", "status": "failed", "reason": why, **result})
        self.finish()
        sys.exit(1)

    # -- steps --------------------------------------------------------------------------------

    def step(self, name: str, what: str, gpu_cmd: List[str], cpu_cmd: List[str], read) -> bool:
        """Run one step (or its stand-in); record it; False when it failed."""
        limit = LIMITS[self.mode][name]
        self.say(f"\n=== {name}: {what}" + ("" if self.cuda else " [SKIPPED: no GPU; CPU stand-in]"))
        result = self.run(gpu_cmd if self.cuda else cpu_cmd, limit)
        entry = {"name": name, "what": what, "limit_s": limit, **result}
        try:
            entry["result"], problems = read()
        except Exception as exc:  # missing or unreadable output: the step did not deliver
            entry["result"], problems = None, [f"no readable result: {type(exc).__name__}: {exc}"]
        if result["timed_out"]:
            problems.insert(0, f"did not finish within {limit} s")
        elif result["returncode"] != 0:
            problems.insert(0, f"exit code {result['returncode']}")
        entry["problems"] = problems
        ok = not problems
        if self.cuda:
            entry["status"] = "passed" if ok else "failed"
        else:
            entry.update(status="skipped", reason="no CUDA device (torch.cuda.is_available() is False)",
                         standin={"status": "passed" if ok else "failed", "note": "CPU stand-in, not a result"})
        self.report["steps"].append(entry)
        self.save()
        verdict = entry["status"].upper() + ("" if self.cuda else f" (stand-in {entry['standin']['status']})")
        self.say(f"=== {name}: {verdict}" + (f": {'; '.join(problems)}" if problems else ""))
        return ok

    def gpu_tests(self) -> bool:
        files = self.args.tests or _gpu_test_files()
        junit, errors = self.work / "gpu-tests.xml", self.work / "kernel-errors.json"
        self.env["SIMHARMON_KERNEL_REPORT"] = str(errors)
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-x", "-p", "no:cacheprovider", "-rfEs",
               f"--junitxml={junit}", *files]  # fmt: skip

        def read():
            tests = _junit(junit)
            problems = [f"{t['id']}: {t['outcome']}: {t.get('message', '')}"[:500] for t in tests
                        if t["outcome"] in ("failed", "error")]  # fmt: skip
            if self.cuda and not any(t["outcome"] == "passed" for t in tests):
                problems.append("no GPU test passed")
            counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
            measured = json.loads(errors.read_text()) if errors.is_file() else None
            return {"files": files, "counts": counts, "tests": tests, "kernel_errors": _worst_ratios(measured)}, problems

        return self.step("gpu_tests", "pytest -m gpu (kernels vs references, pipeline, engine equivalence)", cmd, cmd, read)

    def kernels(self) -> bool:
        out = self.work / "kernels.json"
        gpu, cpu = kernels_commands(self.mode, out)

        def read():
            report = json.loads(out.read_text())
            bad = [c["name"] for c in report["cases"] if not _finite(c.get("max_abs_diff_vs_eager"))]
            problems = [f"non-finite difference from the eager composition: {', '.join(bad)}"] if bad else []
            if self.cuda and not report.get("kernels_used"):
                problems.append("the benchmark ran without the kernels (kernels_used is false)")
            return report, problems

        return self.step("kernels", "benchmarks/kernels.py: achieved GB/s vs device copy", gpu, cpu, read)

    def fps(self) -> bool:
        out = self.work / "fps.json"
        gpu, cpu = fps_commands(self.mode, out)

        def read():
            report = json.loads(out.read_text())
            problems = [f"{name}: {why}" for name, why in report.get("failed", {}).items()]
            missing = [c for c in ("release_loop", f"exact_{self.backend()}", f"per_frame_{self.backend()}")
                       if c not in report.get("cases", {})]  # fmt: skip
            if missing:
                problems.append(f"cases not measured: {', '.join(missing)}")
            return report, problems

        return self.step("fps", f"benchmarks/fps.py cosmos-0.6b 1024x576 K=4 ({FPS_CASES})", gpu, cpu, read)

    def backend(self) -> str:
        return FPS[self.mode]["backend"] if self.cuda else "eager"

    # -- end ----------------------------------------------------------------------------------

    def finish(self) -> None:
        steps = self.report["steps"]
        self.report["finished"] = _now()
        self.report["ok"] = all(s["status"] in ("passed", "skipped") and s.get("standin", {}).get("status") != "failed"
                                for s in steps)  # fmt: skip
        self.report["skipped_for_lack_of_gpu"] = [s["name"] for s in steps if s["status"] == "skipped"]
        self.save()
        self.say("\nsummary:")
        for s in steps:
            extra = f" (stand-in {s['standin']['status']})" if "standin" in s else ""
            self.say(f"  {s['name']:10s} {s['status'].upper()}{extra} {s.get('seconds', 0):7.1f} s")
        if self.report["skipped_for_lack_of_gpu"]:
            self.say(f"  skipped for lack of a GPU: {', '.join(self.report['skipped_for_lack_of_gpu'])}")
        self.say(f"{'OK' if self.report['ok'] else 'FAILED'}: wrote {self.json_path}\nlog: {self.log_path}")
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)  # carried wheels, JUnit XML, step outputs (all embedded above)


def kernels_commands(mode: str, out: Path) -> tuple:
    """(GPU command, CPU stand-in) of the kernels step; arguments after the script are kernels.py's."""
    gpu = [sys.executable, "benchmarks/kernels.py", "--out", str(out)] + (["--iters", "20"] if mode == "quick" else [])
    return gpu, [sys.executable, "benchmarks/kernels.py", "--smoke", "--out", str(out)]


def fps_commands(mode: str, out: Path) -> tuple:
    """(GPU command, CPU stand-in) of the fps step; arguments after the script are fps.py's."""
    cfg = FPS[mode]
    gpu = [sys.executable, "benchmarks/fps.py", "--config", "cosmos-0.6b", "--width", "1024", "--height", "576",
           "--cases", FPS_CASES, "--backends", cfg["backend"], "--best", cfg["backend"], "--frames", str(cfg["frames"]),
           "--warmup", "10", "--out", str(out)]  # fmt: skip
    return gpu, [sys.executable, "benchmarks/fps.py", "--smoke", "--cases", FPS_CASES, "--out", str(out)]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _commit() -> str:
    if os.environ.get("SIMHARMON_COMMIT"):
        return os.environ["SIMHARMON_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no .git: pass SIMHARMON_COMMIT=<hash>)"


def _nvidia_smi() -> Optional[str]:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                 "--format=csv,noheader"], capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def _gpu_test_files() -> List[str]:
    """Test files that hold gpu-marked tests (collecting only these keeps other suites' imports out)."""
    files = [p for p in sorted((ROOT / "tests").rglob("test_*.py")) if GPU_MARK.search(p.read_text())]
    return [str(p.relative_to(ROOT)) for p in files]


def _junit(path: Path) -> List[dict]:
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        entry = {"id": f"{case.get('classname')}::{case.get('name')}", "seconds": float(case.get("time", 0))}
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                entry["message"] = (node.get("message") or node.text or "")[:2000]
                break
        entry["outcome"] = outcome
        tests.append(entry)
    return tests


def _worst_ratios(measured: Optional[dict]) -> Optional[dict]:
    """Worst kernel_err / torch_err per (op, device, dtype) of the kernel tests' measurements."""
    if not measured:
        return None
    worst: Dict[str, float] = {}
    for case in measured.get("cases", []):
        key = f"{case['op']} {case['device']} {case['dtype'].replace('torch.', '')}"
        ratio = case["ratio"] if case["ratio"] is not None else (0.0 if case["kernel_err"] == 0 else float("inf"))
        worst[key] = max(worst.get(key, 0.0), ratio)
    return {"gpu": measured.get("gpu"), "torch": measured.get("torch"), "worst_ratio": worst,
            "cases": measured.get("cases")}  # fmt: skip


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and value == value and abs(value) != float("inf")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="<= 4 minutes: fewer frames, no compile in the fps step")
    parser.add_argument("--out", type=Path, help="folder for the JSON and the log (default benchmarks/results, "
                                                 "or out/gpu-check without a GPU)")
    parser.add_argument("--tests", nargs="+", help="test files for step 1 (default: every file with gpu marks)")
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    pending = Path(tempfile.mkdtemp(prefix="simharmon-gpu-check-out-"))
    check = Check(args, args.out or pending, stamp)
    check.install_wheels()
    check.preflight()
    if args.out is None:  # now that we know whether a GPU is here: results are committed, CPU runs are not
        check = _move(check, ROOT / "benchmarks" / "results" if check.cuda else ROOT / "out" / "gpu-check",
                      (check.report["environment"].get("gpu") or "cpu"), stamp)  # fmt: skip
    for step in (check.gpu_tests, check.kernels, check.fps):
        if not step():
            check.say("STOPPING at the first wrong result (the later steps did not run)")
            break
    check.finish()
    return 0 if check.report["ok"] else 1


def _move(check: Check, folder: Path, device: str, stamp: str) -> Check:
    """Move the report and log to their final place, named after the device."""
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")
    folder.mkdir(parents=True, exist_ok=True)
    check.log.close()
    json_path, log_path = folder / f"gpu-check-{slug}-{stamp}.json", folder / f"gpu-check-{slug}-{stamp}.log"
    shutil.move(str(check.log_path), str(log_path))
    check.json_path, check.log_path = json_path, log_path
    check.log = open(log_path, "a")
    check.report.update(json=str(json_path), log=str(log_path))
    check.save()
    return check


if __name__ == "__main__":
    sys.exit(main())
