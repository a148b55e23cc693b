"""Stations end to end in one process: a watched folder judged by a trained model, verdicts delivered to a
webhook, a sorted folder and a Modbus TCP server, plus the pages and their access rules."""

from __future__ import annotations

import os
import threading
import time

import pytest
from django.urls import reverse
from paho.mqtt import publish
from pymodbus.client import ModbusTcpClient

from tests.conftest import free_port, wait_for
from tests.webapp.camera_servers import CameraServer
from tests.webapp.stations_helpers import Mosquitto, WebhookReceiver, drop_image
from webapp.api.services import api_token_create
from webapp.projects.models import Role
from webapp.review.models import ReviewItem
from webapp.stations import services
from webapp.stations.models import Inspection, OutboxMessage, OutboxStatus, Station
from webapp.stations.runner import Runner
from webapp.training.models import ModelVersion
from webapp.training.services import model_version_activate


@pytest.fixture
def runner_thread():
    """Runs a Runner in a thread with a short lease; stopped (and its stations handed back) at the end."""
    started = []

    def start(**kwargs) -> Runner:
        runner = Runner(lease_seconds=kwargs.pop("lease_seconds", 3), **kwargs)
        stop = threading.Event()
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        started.append((stop, thread))
        return runner

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(30)


def test_a_folder_station_judges_each_file_once_and_tells_every_sink(trained_version, owner, tmp_path, runner_thread):
    # given a station on a watched folder with a webhook, a sorted folder and a Modbus sink
    project = trained_version.project
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    receiver = WebhookReceiver(secret="s3cret")
    receiver.start()
    modbus_port = free_port()
    station = services.station_create(
        project=project, user=owner, name="Line 1", source_kind="folder", source_settings={"path": str(inbox)}
    )
    services.sink_add(station=station, user=owner, kind="webhook", settings={"url": receiver.url, "secret": "s3cret"})
    services.sink_add(station=station, user=owner, kind="folder", settings={"path": str(tmp_path / "sorted")})
    services.sink_add(station=station, user=owner, kind="modbus", settings={"port": modbus_port, "host": "127.0.0.1"})
    runner_thread(alive_file=str(tmp_path / "alive"))
    # when parts arrive: good ones and a clearly defective one, plus a file that is not an image
    names = []
    for seed in range(3):
        names.append(drop_image(inbox, f"good-{seed}.png", seed=1000 + seed).name)
    names.append(drop_image(inbox, "bad-0.png", seed=2000, defect="stain").name)
    (inbox / "broken.png").write_bytes(b"not a png at all")
    # then every image is judged once, moved to done/, and the broken one is in failed/ with the reason
    wait_for(lambda: Inspection.objects.filter(station=station).count() == 4, timeout=60, message="4 verdicts")
    wait_for(lambda: sorted(p.name for p in (inbox / "done").iterdir()) == sorted(names), message="files in done/")
    wait_for(lambda: (inbox / "failed" / "broken.png.txt").exists(), message="broken.png in failed/")
    assert (tmp_path / "alive").exists()  # touched on every heartbeat, for the container health check
    assert (inbox / "failed" / "broken.png").exists() and not (inbox / "broken.png").exists()
    assert "not an image" in (inbox / "failed" / "broken.png.txt").read_text()
    verdicts = dict(Inspection.objects.filter(station=station).values_list("name", "verdict"))
    assert verdicts["bad-0.png"] == "ng"
    assert [verdicts[f"good-{seed}.png"] for seed in range(3)] == ["ok", "ok", "ok"]
    # and every sink received every verdict, the webhook in order and signed
    wait_for(
        lambda: not OutboxMessage.objects.filter(inspection__station=station).exclude(status=OutboxStatus.DELIVERED),
        message="outbox delivered",
    )
    assert len(receiver.received) == 4 and all(receiver.signatures_ok)
    ids = [payload["inspection"] for payload in receiver.received]
    assert ids == sorted(ids)
    payload = receiver.received[-1]
    assert set(payload) >= {"station", "image", "verdict", "score", "regions", "model_version", "captured_at"}
    assert payload["model_version"]["number"] == trained_version.number
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "sorted" / "NG").iterdir()) == ["bad"]
    assert len(list((tmp_path / "sorted" / "OK").iterdir())) == 3
    client = ModbusTcpClient("127.0.0.1", port=modbus_port)
    assert client.connect()
    registers = client.read_holding_registers(0, count=8).registers
    client.close()
    last = Inspection.objects.filter(station=station).order_by("-id").first()
    assert registers[0] == {"ok": 1, "ng": 2, "review": 3}[last.verdict]
    assert registers[1] == 4  # one sequence step per verdict
    assert (registers[2] << 16 | registers[3], registers[4] << 16 | registers[5]) == (3, 1)
    station.refresh_from_db()
    assert (station.ok_count, station.ng_count, station.review_count) == (3, 1, 0)
    # and a sink added later gets the next verdict: its outbox row is written with the verdict, and its delivery
    # loop runs once the runner restarted the station for the new revision
    late = WebhookReceiver()
    late.start()
    services.sink_add(station=station, user=owner, kind="webhook", settings={"url": late.url})
    drop_image(inbox, "good-9.png", seed=1009)
    wait_for(lambda: [p["image"] for p in late.received] == ["good-9.png"], timeout=60, message="the new sink")
    late.stop()
    # and trimming keeps the newest images only, with every verdict
    kept = Inspection.objects.filter(station=station).order_by("-id").first()
    stored = kept.prediction.input_file.path
    old = Inspection.objects.filter(station=station).order_by("id").first().prediction
    assert services.station_images_trim(station_id=station.id, keep=1) == 4
    assert Inspection.objects.filter(station=station, prediction__isnull=True).count() == 4
    assert os.path.exists(stored) and not os.path.exists(old.input_file.path)
    assert f"projects/{project.public_id}/stations/" in kept.prediction.input_file.name  # removed with the project
    # and deleting the station deletes its images too
    services.station_delete(station=Station.objects.get(id=station.id), user=owner)
    assert not os.path.exists(stored) and not Inspection.objects.filter(station_id=station.id).exists()


def test_a_review_band_sends_uncertain_images_to_review_and_triggers_take_one_camera_frame_each(
    client, trained_version, owner, tmp_path, runner_thread
):
    # given a station whose band covers every score, and a camera station in trigger mode (HTTP and MQTT)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    camera = CameraServer("mjpeg", tmp_path / "camera", fps=10)
    camera.start()
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    camera_station = services.station_create(
        project=trained_version.project,
        user=owner,
        name="Camera",
        source_kind="mjpeg",
        source_settings={
            "url": camera.url,
            "mode": "trigger",
            "trigger_mqtt": {"host": "127.0.0.1", "port": broker.port, "topic": "line/part-present"},
        },
    )
    _, secret = api_token_create(project=trained_version.project, name="plc", scopes=["predict"], created_by=owner)
    station = services.station_create(
        project=trained_version.project,
        user=owner,
        name="Everything uncertain",
        source_kind="folder",
        source_settings={"path": str(inbox)},
        rules={"review_band": [0, 1]},
    )
    runner_thread()
    # when an image arrives
    drop_image(inbox, "part.png", seed=5)
    # then it is REVIEW, and a review item with the stored input waits for people
    inspection = wait_for(lambda: Inspection.objects.filter(station=station).first(), timeout=60, message="verdict")
    assert inspection.verdict == "review"
    item = ReviewItem.objects.get(prediction=inspection.prediction)
    assert item.prediction.input_file and item.prediction.input_name == "part.png"
    # and activating another version makes the runner restart the station with it
    second = ModelVersion.objects.create(
        project=trained_version.project,
        number=trained_version.number + 1,
        family=trained_version.family,
        artifact_prefix=trained_version.artifact_prefix,
        artifact_files=trained_version.artifact_files,
        calibration=trained_version.calibration,
        metrics=trained_version.metrics,
    )
    model_version_activate(version=second, user=owner)
    wait_for(lambda: Station.objects.get(id=station.id).running_version_id == second.id, message="v2 running")
    drop_image(inbox, "part-2.png", seed=6)
    wait_for(
        lambda: Inspection.objects.filter(station=station, name="part-2.png", model_version=second).exists(),
        timeout=60,
        message="judged by v2",
    )
    try:
        # when the line's controller triggers the camera: once over HTTP, then once over MQTT
        wait_for(lambda: Station.objects.get(id=camera_station.id).claimed_by, message="camera station claimed")
        time.sleep(1.0)  # nothing is judged without a trigger
        assert not Inspection.objects.filter(station=camera_station).exists()
        url = reverse("station_trigger", args=[trained_version.project.public_id, camera_station.public_id])
        assert client.post(url).status_code == 401  # a token is needed
        response = client.post(url, headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 200 and response.json()["triggers"] == 1
        # then exactly one frame is judged per trigger
        wait_for(lambda: Inspection.objects.filter(station=camera_station).count() == 1, message="HTTP trigger")
        publish.single("line/part-present", "1", qos=1, hostname="127.0.0.1", port=broker.port)
        wait_for(lambda: Inspection.objects.filter(station=camera_station).count() == 2, message="MQTT trigger")
        time.sleep(1.0)
        assert Inspection.objects.filter(station=camera_station).count() == 2
    finally:
        camera.stop()
        broker.stop()


def test_a_lease_keeps_a_station_on_one_runner_until_it_expires(project, owner, tmp_path):
    station = services.station_create(
        project=project,
        user=owner,
        name="Leased",
        source_kind="folder",
        source_settings={"path": str(tmp_path)},
    )
    assert services.station_claim(station_id=station.id, runner="a", lease_seconds=30)
    assert not services.station_claim(station_id=station.id, runner="b", lease_seconds=30)
    assert services.station_heartbeat(station_id=station.id, runner="a", lease_seconds=30, source_health={})
    assert not services.station_heartbeat(station_id=station.id, runner="b", lease_seconds=30, source_health={})
    # a runner that stops renewing loses the station once its lease runs out
    Station.objects.filter(id=station.id).update(lease_expires_at="2000-01-01T00:00:00Z")
    assert services.station_claim(station_id=station.id, runner="b", lease_seconds=30)
    assert not services.station_heartbeat(station_id=station.id, runner="a", lease_seconds=30, source_health={})
    # a paused station is not claimed
    services.station_pause(station=station, user=owner, paused=True)
    services.station_release(station_id=station.id, runner="b")
    assert station.id not in services.stations_claimable()


def test_station_pages_owners_manage_members_watch_strangers_get_404(
    client, project, owner, member_with, outsider, tmp_path
):
    viewer = member_with(Role.VIEWER)
    list_url = reverse("station_list", args=[project.public_id])
    client.force_login(owner)
    response = client.post(
        list_url,
        {"name": "Cam 1", "source_kind": "folder", "folder_path": str(tmp_path), "source_settings": "", "rules": ""},
    )
    station = Station.objects.get(project=project, name="Cam 1")
    assert response.status_code == 302 and station.source_settings == {"path": str(tmp_path)}
    bad = client.post(list_url, {"name": "Cam 2", "source_kind": "folder", "folder_path": "", "rules": "{oops"})
    assert bad.status_code == 400 and b"Not valid JSON" in bad.content
    detail_url = reverse("station_detail", args=[project.public_id, station.public_id])
    assert client.get(detail_url).status_code == 200
    assert client.get(detail_url, headers={"HX-Request": "true"}).templates[0].name == "stations/_live.html"
    client.force_login(viewer)
    assert client.get(detail_url).status_code == 200
    pause_url = reverse("station_pause", args=[project.public_id, station.public_id])
    assert client.post(pause_url, {"paused": "1"}).status_code == 403
    assert client.post(list_url, {"name": "Cam 3", "source_kind": "folder", "folder_path": "/x"}).status_code == 403
    client.force_login(outsider)
    assert client.get(detail_url).status_code == 404
    assert client.get(list_url).status_code == 404
    client.force_login(owner)
    assert client.post(pause_url, {"paused": "1"}).status_code == 302
    station.refresh_from_db()
    assert station.paused
    # editing saves the settings and bumps the revision, so a runner restarts the station with them
    edit_url = reverse("station_edit", args=[project.public_id, station.public_id])
    form = {"name": "Cam 1b", "source_kind": "folder", "folder_path": str(tmp_path), "source_settings": "{}"}
    client.post(edit_url, {**form, "rules": '{"review_band": [0.45, 0.55]}'})
    station.refresh_from_db()
    assert (station.name, station.rules, station.revision) == ("Cam 1b", {"review_band": [0.45, 0.55]}, 2)
    response = client.post(edit_url, {**form, "rules": '{"review_band": [0.9, 0.1]}'})
    assert response.status_code == 400 and "review band" in response.content.decode()
    station.refresh_from_db()
    assert station.revision == 2  # refused: nothing saved
    # a refused edit or sink shows the form again as it was typed, so nothing typed is lost
    typed = {**form, "name": "Cam 1c", "rules": '{"review_band": [0.4, oops'}
    page = client.post(edit_url, typed)
    assert page.status_code == 400 and "Not valid JSON" in page.content.decode()
    assert page.context["form"].data["name"] == "Cam 1c" and "oops" in page.content.decode()
    sink_url = reverse("sink_add", args=[project.public_id, station.public_id])
    page = client.post(sink_url, {"kind": "webhook", "settings": '{"url": "http://127.0.0.1:9/hook",'})
    assert page.status_code == 400 and "http://127.0.0.1:9/hook" in page.content.decode()
    assert not station.sinks.exists()


@pytest.mark.slow
def test_a_webhook_down_for_a_minute_gets_every_verdict_in_order_after_it_recovers(
    trained_version, owner, tmp_path, runner_thread
):
    # given a station delivering to a webhook receiver that is down
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    receiver = WebhookReceiver(secret="k")
    station = services.station_create(
        project=trained_version.project,
        user=owner,
        name="Outage",
        source_kind="folder",
        source_settings={"path": str(inbox), "poll_seconds": 0.05},
    )
    services.sink_add(station=station, user=owner, kind="webhook", settings={"url": receiver.url, "secret": "k"})
    runner_thread()
    # when parts keep arriving for the 60 s it stays down
    started = time.monotonic()
    names = []
    while time.monotonic() - started < 60:
        names.append(drop_image(inbox, f"part-{len(names):03d}.png", seed=len(names), size=64).name)
        time.sleep(3)
    receiver.start()
    # then every verdict arrives once it is back, in order, none dead-lettered
    wait_for(
        lambda: not OutboxMessage.objects.filter(inspection__station=station).exclude(status=OutboxStatus.DELIVERED),
        timeout=120,
        message="the outbox delivered",
    )
    ids = list(Inspection.objects.filter(station=station).order_by("id").values_list("id", flat=True))
    assert len(ids) == len(names) == len({p["inspection"] for p in receiver.received})
    assert [p["inspection"] for p in receiver.received] == ids
    receiver.stop()


def test_a_dead_letter_shows_on_the_station_page_and_can_be_sent_again(client, project, owner, tmp_path):
    from django.utils import timezone

    from webapp.stations.outbox import outbox_failed

    # given a webhook message that failed its last allowed try
    station = services.station_create(
        project=project, user=owner, name="Line", source_kind="folder", source_settings={"path": str(tmp_path)}
    )
    sink = services.sink_add(station=station, user=owner, kind="webhook", settings={"url": "http://127.0.0.1:9/x"})
    now = timezone.now()
    inspection = Inspection.objects.create(
        station=station, name="p.png", verdict="ng", raw_score=1, normalised_score=0.9,
        captured_at=now, decided_at=now, latency_ms=1,
    )  # fmt: skip
    message = OutboxMessage.objects.create(sink=sink, inspection=inspection, payload={"verdict": "ng"}, attempts=11)
    assert outbox_failed(message=message, error="receiver answered 503", max_attempts=12) == OutboxStatus.DEAD
    # then the live view shows it with its error
    client.force_login(owner)
    detail = reverse("station_detail", args=[project.public_id, station.public_id])
    live = client.get(detail, headers={"HX-Request": "true"}).content.decode()
    assert '<td class="sink-dead">1 <span class="muted">(receiver answered 503)</span>' in live
    # and "Send again" queues it for delivery once more
    client.post(reverse("sink_retry", args=[project.public_id, station.public_id, sink.id]))
    message.refresh_from_db()
    assert (message.status, message.attempts) == (OutboxStatus.PENDING, 0)
