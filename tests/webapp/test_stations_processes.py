"""Stations against real processes: the runner as a `manage.py run_stations` subprocess killed with SIGKILL
mid-stream and replaced, Mosquitto restarted mid-stream, and a webhook receiver that goes down and comes back.
Every image must be judged exactly once, and every verdict delivered to every sink, in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, _database_url, wait_for
from tests.webapp.stations_helpers import Mosquitto, MqttCollector, WebhookReceiver, drop_image
from webapp.stations import services
from webapp.stations.models import Inspection, OutboxMessage, OutboxStatus, Station

LEASE_S = 2


class RunnerProcess:
    """`manage.py run_stations` on the test database and media folder, in its own process group."""

    def __init__(self, logfile: Path, name: str):
        self.logfile = logfile
        self.name = name
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from django.conf import settings

        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "KENSA_TEST_DATABASE_URL": _database_url(),
            "KENSA_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        command = [sys.executable, "manage.py", "run_stations", "--lease", str(LEASE_S), "--name", self.name]
        self.log = self.logfile.open("ab")
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self._ready, timeout=90, message=f"runner {self.name} to start")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"runner exited early:\n{self.logfile.read_text()[-4000:]}")
        return b"ready" in self.logfile.read_bytes()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def first_occurrences(ids: list[int]) -> list[int]:
    seen: set[int] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]


@pytest.fixture
def processes(tmp_path):
    started = []

    def track(thing):
        started.append(thing)
        return thing

    yield track
    for thing in reversed(started):
        thing.stop() if not isinstance(thing, RunnerProcess) else thing.kill()


def test_a_runner_killed_mid_stream_a_broker_restart_and_a_webhook_outage_lose_nothing(
    trained_version, owner, tmp_path, processes
):
    # given Mosquitto, a webhook receiver and a station delivering to both
    broker = processes(Mosquitto(tmp_path / "mosquitto"))
    broker.start()
    collector = processes(MqttCollector(broker.port))
    receiver = processes(WebhookReceiver(secret="k"))
    receiver.start()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    station = services.station_create(
        project=trained_version.project,
        user=owner,
        name="Line",
        source_kind="folder",
        source_settings={"path": str(inbox), "poll_seconds": 0.05},
    )
    services.sink_add(station=station, user=owner, kind="mqtt", settings={"host": "127.0.0.1", "port": broker.port})
    services.sink_add(station=station, user=owner, kind="webhook", settings={"url": receiver.url, "secret": "k"})
    first = processes(RunnerProcess(tmp_path / "runner-a.log", "runner-a"))
    first.start()
    wait_for(lambda: Station.objects.get(id=station.id).claimed_by == "runner-a", message="runner-a claims")
    total = 24
    names = [f"part-{n:03d}.png" for n in range(total)]

    def judged() -> int:
        return Inspection.objects.filter(station=station).count()

    # when images stream in and the runner is killed with SIGKILL in the middle
    for n in range(8):
        drop_image(inbox, names[n], seed=n, defect="scratch" if n % 5 == 4 else None, size=64)
        time.sleep(0.05)
    wait_for(lambda: judged() >= 3, timeout=60, message="a few verdicts before the kill")
    first.kill()
    for n in range(8, 16):
        drop_image(inbox, names[n], seed=n, defect="scratch" if n % 5 == 4 else None, size=64)
    # and a second runner takes over once the lease expires, while the broker restarts and the webhook is down
    second = processes(RunnerProcess(tmp_path / "runner-b.log", "runner-b"))
    second.start()
    wait_for(lambda: Station.objects.get(id=station.id).claimed_by == "runner-b", timeout=30, message="takeover")
    receiver.stop()
    broker.stop()
    for n in range(16, total):
        drop_image(inbox, names[n], seed=n, defect="scratch" if n % 5 == 4 else None, size=64)
        time.sleep(0.05)
    wait_for(lambda: judged() == total, timeout=90, message="every image judged")
    time.sleep(1.5)  # deliveries keep failing a while: the outbox holds them
    broker.start()
    receiver.start()
    # then every image was judged exactly once and moved to done/
    wait_for(lambda: sorted(p.name for p in (inbox / "done").iterdir()) == names, message="all files in done/")
    assert sorted(Inspection.objects.filter(station=station).values_list("name", flat=True)) == names
    # and every verdict reached both sinks, in order
    wait_for(
        lambda: not OutboxMessage.objects.filter(inspection__station=station).exclude(status=OutboxStatus.DELIVERED),
        timeout=90,
        message="the outbox delivered",
    )
    ids = list(Inspection.objects.filter(station=station).order_by("id").values_list("id", flat=True))
    wait_for(lambda: set(p["inspection"] for p in collector.verdicts) == set(ids), message="MQTT got everything")
    assert first_occurrences([p["inspection"] for p in collector.verdicts]) == ids
    assert first_occurrences([p["inspection"] for p in receiver.received]) == ids
    assert all(receiver.signatures_ok)
    assert "online" in collector.statuses
