"""Fleet ingress latency against `simharmon serve` over tcp, affinity, and a replica failure, in one run.

    python benchmarks/fleet.py                     # identity STAND-IN replicas, 256x144 rgb8, writes JSON
    python benchmarks/fleet.py --engine tiny       # the tiny model (random weights) in both
    python benchmarks/fleet.py --smoke             # a few frames, prints the JSON, writes nothing

One process starts a local Ray cluster with a fleet of ``--replicas`` replicas (the ZeroMQ ingress
in this process) and a bridge server on one engine of the same kind (``serve``: the server
``simharmon serve`` runs, here in a thread), both on loopback tcp. A client per server sends the
same frames, one camera after another, alternating between the two (paired, so both see the same
load); ``added_*`` = fleet - serve round trip. Then: ``affinity`` (replicas per stream over all
frames of 8 cameras from 2 clients) and ``failover`` (a replica killed mid-stream: frames answered,
streams flagged reset, seconds until Serve runs ``--replicas`` again). Results:
``benchmarks/results/fleet-<engine>-cpu-<yyyymmdd>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import ray
import torch
from ray import serve

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simharmon.bridge import BridgeClient, BridgeServer, ClientConfig, IdentityStandIn, ServerConfig  # noqa: E402
from simharmon.fleet.config import FleetConfig  # noqa: E402
from simharmon.fleet.service import Fleet  # noqa: E402
from simharmon.runtime import RuntimeSpec, build_runtime  # noqa: E402

CAMERAS = ("front", "left", "right", "rear")


def _stats(values):
    ms = np.asarray(values) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "n": int(ms.size)}


def _running(app: str) -> int:
    return serve.status().applications[app].deployments["EngineReplica"].replica_states.get("RUNNING", 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("identity", "tiny"), default="identity")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--frames", type=int, default=400, help="paired latency frames (default 400)")
    parser.add_argument("--affinity-frames", type=int, default=64, help="frames per camera, 8 cameras (default 64)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    frames, per_camera = (10, 4) if args.smoke else (args.frames, args.affinity_frames)
    kind = {"engine": "identity"} if args.engine == "identity" else {"config": "tiny"}
    config = FleetConfig(device="cpu", replicas=args.replicas, cpus_per_replica=0.25, torch_threads=1,
                         bind=["tcp://127.0.0.1:*"], **kind)
    engine = IdentityStandIn() if args.engine == "identity" else build_runtime(RuntimeSpec(config="tiny", device="cpu"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(8)]

    started = time.monotonic()
    fleet = Fleet.start(config, local=True)
    fleet.server.start()
    startup_s = time.monotonic() - started
    single = BridgeServer(engine, ServerConfig(bind=("tcp://127.0.0.1:*",), max_batch=1, shared_memory=False)).start()
    result = {"benchmark": "fleet", "command": "python " + " ".join(["benchmarks/fleet.py", *sys.argv[1:]]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "engine": fleet.processor.name, "replicas": args.replicas, "size": f"{args.width}x{args.height}",
              "host": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
                       "cpus": os.cpu_count(), "machine": platform.machine()},
              "fleet_startup_s": round(startup_s, 1)}
    try:
        # 1. Paired round trips, one frame at a time.
        times = {"serve": [], "fleet": []}
        with BridgeClient(ClientConfig(single.endpoints[0], sim="bench", timeout_s=60)) as to_serve, \
                BridgeClient(ClientConfig(fleet.endpoints[0], sim="bench", timeout_s=60)) as to_fleet:
            for i in range(frames + 5):
                camera = CAMERAS[i % len(CAMERAS)]
                for name, client in (("serve", to_serve), ("fleet", to_fleet)):
                    began = time.perf_counter()
                    reply = client.enhance(images[i % 8], camera=camera)
                    if i >= 5:
                        times[name].append(time.perf_counter() - began)
                    assert reply.kind == "result", reply
        serve_s, fleet_s = _stats(times["serve"]), _stats(times["fleet"])
        result["latency"] = {"serve_tcp": serve_s, "fleet_tcp": fleet_s,
                             "added_p50_ms": round(fleet_s["p50_ms"] - serve_s["p50_ms"], 3),
                             "added_p99_ms": round(fleet_s["p99_ms"] - serve_s["p99_ms"], 3),
                             "added_paired_median_ms": round(
                                 float(np.median(np.subtract(times["fleet"], times["serve"]))) * 1000, 3)}

        # 2. Affinity: 8 cameras from 2 clients, then 3. a replica killed mid-stream.
        processor = fleet.processor
        old = set(processor.replica_counts)
        clients = [BridgeClient(ClientConfig(fleet.endpoints[0], sim=sim, timeout_s=120)) for sim in ("sim-a", "sim-b")]

        def rounds(count):
            replies = []
            for _ in range(count):
                for client in clients:
                    for c, camera in enumerate(CAMERAS):
                        client.submit(images[c], camera=camera)
                    replies.extend(client.results(timeout_s=120))
            return replies

        try:
            replies = rounds(per_camera)
            streams = {k: dict(v) for k, v in processor.replica_counts.items() if k not in old}
            result["affinity"] = {
                "frames": len(replies), "answered": sum(r.kind == "result" for r in replies), "streams": len(streams),
                "streams_on_one_replica": sum(len(v) == 1 for v in streams.values()),
                "replicas_used": len({r for v in streams.values() for r in v}),
                "frames_per_stream_replica": {k: dict(v) for k, v in streams.items()}}
            before = {k: processor.replica_of[k] for k in streams}
            victim = next(iter(before.values()))
            on_victim = [k for k, r in before.items() if r == victim]
            killed = time.monotonic()
            # Not waited for: the next frames race the replica's death (some are in flight when it dies).
            processor.handle.options(multiplexed_model_id=on_victim[0]).exit_for_fault_test.remote()
            after = rounds(4)
            answered_s = time.monotonic() - killed
            while _running(config.app_name) < args.replicas and time.monotonic() - killed < 120:
                time.sleep(0.5)
            restored_s = time.monotonic() - killed
            final = rounds(2)
            result["failover"] = {
                "streams_on_killed_replica": len(on_victim), "frames_after_kill": len(after),
                "answered": {kind: sum(r.kind == kind for r in after) for kind in ("result", "dropped", "error", "timeout")},
                "flagged_history_reset": sum(bool(r.history_reset) for r in after),
                "seconds_to_answer_4_rounds": round(answered_s, 2),
                "seconds_until_replicas_running_again": round(restored_s, 2),
                "frames_resent": processor.failovers,
                "after_restore_all_results": all(r.kind == "result" for r in final)}
        finally:
            for client in clients:
                client.close()
    finally:
        single.stop(timeout_s=10)
        fleet.stop()
    result["cluster_stopped"] = not ray.is_initialized()
    text = json.dumps(result, indent=2)
    print(text)
    if not args.smoke:
        out = REPO / "benchmarks" / "results" / f"fleet-{args.engine}-cpu-{dt.date.today():%Y%m%d}.json"
        out.write_text(text + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
