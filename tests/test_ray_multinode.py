"""RLlib training across two Ray nodes survives losing one of them.

A private cluster on this machine: a head with one CPU (``ray start --head``) and a second node
with one CPU and the custom resource ``taktline_node2`` (``ray start --address``), each its own
process tree. Two env runners of one CPU each therefore land one per node. After the first
training iteration the second node is SIGKILLed whole (raylet, agents, its env runner), as when a
machine is lost, and a third node (``taktline_node3``) joins; RLlib's fault tolerance restarts
the lost runner there and training finishes its budget in the same MLflow run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ray_support import (
    Cluster,
    WorkerNode,
    head_node_id,
    kill_worker_node,
    mlflow_client,
    start_cluster,
    start_worker_node,
    stop_cluster,
    tiny_config,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

KILL_AFTER_ITERATION = 1


@pytest.fixture
def two_node_cluster() -> Iterator[tuple[Cluster, list[WorkerNode]]]:
    """A one-CPU head and a one-CPU second node, this process connected as the driver; yields
    the head and the list of worker nodes (a test may append more). Every node and the head
    are stopped at the end, whatever happened."""
    import ray

    head = start_cluster(num_cpus=1)
    nodes: list[WorkerNode] = []
    try:
        ray.init(address=head.address, log_to_driver=False)
        nodes.append(start_worker_node(head, "taktline_node2", num_cpus=1))
        yield head, nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in nodes:
            kill_worker_node(node)
        stop_cluster(head.process)
        shutil.rmtree(head.temp_dir, ignore_errors=True)


def _history(client: Any, run_id: str, key: str) -> list[Any]:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))


def test_training_with_runners_on_two_nodes_survives_losing_one_node(
    two_node_cluster: tuple[Cluster, list[WorkerNode]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray.util.state import list_actors

    from taktline.training import rllib_backend
    from taktline.training.config import validate_config
    from taktline.training.rllib_runner import RUNNERS

    head, nodes = two_node_cluster
    node2 = nodes[0]
    head_id = head_node_id()
    monkeypatch.chdir(tmp_path)  # the embedded MLflow store and runs/ land here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = validate_config(
        tiny_config(
            "tiny-multinode",
            **{
                "hyperparameters.num_env_runners": 2,
                "n_envs": 2,
                "hyperparameters.n_steps": 200,
                "budget.total_timesteps": 2000,
                "checkpoint.every_steps": 800,
                "eval.baselines": ["FIFO"],
                "tracking.experiment": "ray-multinode",
            },
        )
    )
    runner_class = RUNNERS["lean"].__name__

    def runner_nodes() -> dict[int, str]:
        """pid -> node id of every alive env runner."""
        actors = list_actors(
            address=head.address,
            filters=[("class_name", "=", runner_class), ("state", "=", "ALIVE")],
        )
        return {int(a.pid): str(a.node_id) for a in actors}

    def replaced(runners: dict[int, str]) -> bool:
        """Two runners alive, none of them (any more) on the lost node."""
        return len(runners) == 2 and node2.node_id not in runners.values()

    seen: list[dict[int, str]] = []
    kill_step: list[float] = []

    def lose_node2(metrics: dict[str, float]) -> None:
        seen.append(runner_nodes())
        if len(seen) == KILL_AFTER_ITERATION:
            kill_worker_node(node2)
            kill_step.append(metrics["steps"])
            # a replacement machine joins; the lost runner's CPU exists again there
            nodes.append(start_worker_node(head, "taktline_node3", num_cpus=1))
        elif len(seen) > KILL_AFTER_ITERATION and not replaced(seen[-1]):
            # wait for Ray to mark node 2 dead (missed heartbeats, tens of seconds) and start
            # the replacement runner, rather than spend the training budget on one runner
            deadline = time.monotonic() + 120
            while not replaced(seen[-1]) and time.monotonic() < deadline:
                time.sleep(0.5)
                seen[-1] = runner_nodes()

    result = rllib_backend.train(cfg, address=head.address, on_iteration=lose_node2)

    node3 = nodes[1]
    # placement: before the loss one runner on each node, afterwards none on node 2 and one on
    # the node that joined
    assert sorted(seen[0].values()) == sorted([head_id, node2.node_id]), (seen[0], head_id)
    assert len(seen) >= KILL_AFTER_ITERATION + 2, seen
    for after in seen[KILL_AFTER_ITERATION:]:
        assert sorted(after.values()) == sorted([head_id, node3.node_id]), (after, seen)
    lost = set(seen[0]) - set(seen[-1])
    assert len(lost) == 1 and seen[0][lost.pop()] == node2.node_id, seen

    # the MLflow run: finished, metrics past the kill, the restart counted, a normal run's output
    assert result.num_timesteps >= 2000
    client = mlflow_client(tmp_path)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in _history(client, result.run_id, "train.iteration")]
    iterations = [m.value for m in _history(client, result.run_id, "train.iteration")]
    assert iterations == [float(i) for i in range(1, len(iterations) + 1)], iterations
    assert max(steps) > kill_step[0] and len(iterations) >= KILL_AFTER_ITERATION + 2, steps
    healthy = [m.value for m in _history(client, result.run_id, "ray.healthy_env_runners")]
    restarts = [m.value for m in _history(client, result.run_id, "ray.env_runner_restarts")]
    assert healthy[0] == 2 and healthy[-1] == 2, healthy
    assert restarts[0] == 0 and restarts[-1] >= 1, restarts
    for key in ("eval.profit", "train.episode_return", "baseline.FIFO.profit", "checkpoint.step"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"checkpoints", "config.json", "learning_curve.png"} <= artifacts, artifacts
    (version,) = client.search_model_versions("name='tiny-multinode'")
    assert version.run_id == result.run_id
    assert version.tags["verdict"] in {"won", "lost"}
