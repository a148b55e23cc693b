"""The Docker files agree with the code: no Docker engine runs here, so what can be checked without one is.

The compose file's services must match the queues the tasks are routed to, keep Redis's queue on disk, and have
health checks; the entrypoint must parse; the image must not carry test data or local state.
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from workers.decorators import DEFAULT_QUEUE, GPU_TRAIN_QUEUE, TRAIN_QUEUE

DOCKER = Path(__file__).resolve().parent.parent / "docker"


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]


def listens_to(service: dict) -> set[str]:
    command = service["command"]
    assert command[0] == "worker", command
    return set(command[1].split(","))


def test_each_queue_has_its_worker_and_the_gpu_one_is_opt_in(services):
    assert listens_to(services["worker"]) == {DEFAULT_QUEUE}
    assert listens_to(services["worker-train"]) == {TRAIN_QUEUE}
    gpu = services["worker-train-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH"] == "cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["worker-train"]["command"][2:] == ["--concurrency", "1"]  # one training at a time per box


def test_the_gpu_profile_trains_on_the_gpu_queue_with_the_gpu(services):
    gpu = services["worker-train-gpu"]
    # the queue training is routed to while a GPU worker is alive, and `train` (runs sent while it was down)
    assert gpu["command"][1].split(",") == [GPU_TRAIN_QUEUE, TRAIN_QUEUE]
    assert gpu["command"][2:] == ["--concurrency", "1"]
    # an explicit cuda: without a usable GPU the worker stops at start instead of training on the CPU
    assert gpu["environment"]["KENSA_DEVICE"] == "cuda"
    # and it keeps the shared settings (the merge must not drop the database, broker or secret key)
    assert gpu["environment"]["DATABASE_URL"] == services["worker-train"]["environment"]["DATABASE_URL"]
    assert gpu["environment"]["KENSA_SECRET_KEY_FILE"] == "/data/secret_key"
    # its health check pings the node name the entrypoint gives it (queues joined by +)
    assert f"-d {GPU_TRAIN_QUEUE}+{TRAIN_QUEUE}@$$HOSTNAME" in gpu["healthcheck"]["test"][1]
    assert '-n "${queues//,/+}@%h"' in (DOCKER / "entrypoint.sh").read_text()
    # nothing else asks for a GPU: web and the other workers use the CPU image and predict on the CPU
    for name in ("web", "worker", "worker-train", "beat"):
        assert services[name]["image"] == "kensa:cpu" and "KENSA_DEVICE" not in services[name]["environment"], name
        assert "KENSA_PREDICT_DEVICE" not in services[name]["environment"], name
    assert services["worker-train"]["command"][1] == TRAIN_QUEUE


def test_only_the_gpu_image_gets_cuda_torch():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in dockerfile  # the cpu image: torch without CUDA
    assert 'if [ "$TORCH" = cpu ]; then python -c "import torch; assert torch.version.cuda is None' in dockerfile
    assert "assert torch.version.cuda, 'no CUDA in '" in dockerfile


def test_state_lives_on_volumes_and_redis_keeps_its_queue(services):
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in services["postgres"]["volumes"])
    for name in ("web", "worker", "worker-train", "worker-train-gpu", "beat"):
        volumes = services[name]["volumes"]
        assert "media:/media" in volumes and "data:/data" in volumes, name
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://") and environment["REDIS_URL"].startswith("redis://")


def test_every_long_running_service_but_beat_has_a_health_check(services):
    for name, service in services.items():
        if name != "beat":
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    # workers start once web has migrated the database
    assert services["worker"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_entrypoint_parses_and_workers_take_one_task_at_a_time():
    subprocess.run(["bash", "-n", str(DOCKER / "entrypoint.sh")], check=True)
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    assert "--prefetch-multiplier 1" in entrypoint  # a long training must not hold a second message hostage


def test_the_image_leaves_out_tests_local_state_and_secrets():
    ignored = set((DOCKER.parent / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "tests", "media"} <= ignored
