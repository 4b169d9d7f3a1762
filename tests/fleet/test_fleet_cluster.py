"""`simharmon fleet` on a local Ray cluster: 2 CPU replicas of the tiny model, 8 cameras from 2 clients.

One cluster for the module (Ray starts slowly on 2 cores); every loop is bounded; the cluster must
stop cleanly at the end. Frames are 16x16 so that > 500 of them take seconds.
"""

import time

import numpy as np
import pytest
import ray
import torch
from ray import serve

from simharmon.bridge import BridgeClient, BridgeServer, ClientConfig, ServerConfig
from simharmon.fleet.config import FleetConfig
from simharmon.fleet.service import Fleet
from simharmon.runtime import RuntimeSpec, build_runtime

pytestmark = pytest.mark.slow

SIMS = ("sim-a", "sim-b")
CAMERAS = ("front", "left", "right", "rear")
FRAMES = 64  # per camera: 2 x 4 x 64 = 512 frames
SIZE = 16


def _frame(sim: str, camera: str, index: int) -> np.ndarray:
    seed = (SIMS.index(sim) * 16 + CAMERAS.index(camera)) * 100_000 + index
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _clients(endpoint: str, timeout_s: float = 120.0):
    return {sim: BridgeClient(ClientConfig(endpoint, sim=sim, timeout_s=timeout_s, max_in_flight=8)) for sim in SIMS}


def _rounds(clients, rounds: range, timeout_s: float = 120.0):
    """Each round: both clients submit one frame per camera, then collect; returns {(sim, cam, i): Reply}."""
    replies = {}
    for index in rounds:
        for sim, client in clients.items():
            for cam in CAMERAS:
                client.submit(_frame(sim, cam, index), camera=cam, frame_index=index)
            for reply in client.results(timeout_s=timeout_s):
                replies[(sim, reply.camera, index)] = reply
    return replies


def _drive(endpoint: str, rounds: range):
    """``_rounds`` with two fresh clients (new streams), closed afterwards."""
    clients = _clients(endpoint)
    try:
        return _rounds(clients, rounds)
    finally:
        for client in clients.values():
            client.close()


@pytest.fixture(scope="module")
def fleet():
    torch.set_num_threads(1)
    config = FleetConfig(config="tiny", device="cpu", replicas=2, cpus_per_replica=0.25, torch_threads=1,
                         bind=["tcp://127.0.0.1:*"], request_timeout_s=30.0, failover_timeout_s=60.0)
    running = Fleet.start(config, local=True, num_cpus=2)
    running.server.start()
    yield running
    running.stop()
    assert not ray.is_initialized()


def _running_replicas(app: str) -> int:
    deployment = serve.status().applications[app].deployments["EngineReplica"]
    return deployment.replica_states.get("RUNNING", 0)


def test_affinity_and_outputs_equal_a_single_server(fleet):
    replies = _drive(fleet.endpoints[0], range(FRAMES))
    assert len(replies) == len(SIMS) * len(CAMERAS) * FRAMES >= 500
    assert all(r.kind == "result" for r in replies.values())
    assert not any(r.header.get("history_reset") for r in replies.values())
    counts = fleet.processor.replica_counts
    assert len(counts) == 8 and sum(sum(c.values()) for c in counts.values()) == len(replies)
    assert all(len(c) == 1 for c in counts.values()), f"a stream was served by several replicas: {counts}"

    # The same frames through one `simharmon serve` engine, one stream per engine call (what a replica does).
    engine = build_runtime(RuntimeSpec(config="tiny", device="cpu"))
    server = BridgeServer(engine, ServerConfig(bind=("tcp://127.0.0.1:*",), max_batch=1)).start()
    try:
        single = _drive(server.endpoints[0], range(FRAMES))
    finally:
        server.stop(timeout_s=10)
    differing = [k for k, r in replies.items() if not np.array_equal(r.image, single[k].image)]
    assert not differing, f"{len(differing)} frames differ from simharmon serve's, e.g. {differing[:3]}"


def test_replica_killed_mid_stream(fleet):
    processor = fleet.processor
    old_streams = set(processor.replica_of)
    clients = _clients(fleet.endpoints[0])
    try:
        _rounds(clients, range(4))
        before = {k: r for k, r in processor.replica_of.items() if k not in old_streams}
        assert len(before) == 8
        victim = next(iter(before.values()))
        on_victim = {k for k, r in before.items() if r == victim}
        # Not waited for: the next frames race the replica's death (some may be in flight when it dies).
        processor.handle.options(multiplexed_model_id=next(iter(on_victim))).exit_for_fault_test.remote()
        after = _rounds(clients, range(4, 12))
        assert len(after) == 8 * 8, "a frame went unanswered"
        assert all(r.kind == "result" for r in after.values()), {k: r.kind for k, r in after.items() if r.kind != "result"}
        for key in on_victim:
            sim, cam = key.split("/")[0], key.split("/")[1].split("#")[0]
            assert after[(sim, cam, 4)].history_reset, f"stream {key} lost its replica but was not flagged"
            if len(processor.replica_counts[key]) == 2:  # not moved again to the restarted replica: history kept
                assert not any(after[(sim, cam, i)].history_reset for i in range(5, 12))
            assert processor.replica_of[key] != victim
        for key in set(before) - on_victim:  # streams of the live replica keep their history unless they move
            sim, cam = key.split("/")[0], key.split("/")[1].split("#")[0]  # (to the restarted replica)
            moved = processor.replica_counts[key].keys() != {before[key]}
            assert any(after[(sim, cam, i)].history_reset for i in range(4, 12)) == moved
        # Serve restores the replica count (bounded wait), and the fleet keeps answering the same streams.
        deadline = time.monotonic() + 90
        while _running_replicas(fleet.config.app_name) < 2 and time.monotonic() < deadline:
            time.sleep(1.0)
        assert _running_replicas(fleet.config.app_name) == 2
        final = _rounds(clients, range(12, 14))
        assert len(final) == 16 and all(r.kind == "result" for r in final.values())
    finally:
        for client in clients.values():
            client.close()
