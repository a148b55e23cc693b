"""Thumbnails survive dead processes: work is sent a chunk at a time as rows commit, a periodic check sends again
what went quiet (up to a cap, then the image says why it has no preview), and sending a file again retries it."""

import io
import os
import signal
import time
import zipfile
from datetime import timedelta

import numpy as np
import pytest
import redis
from django.conf import settings
from django.utils import timezone
from PIL import Image as PILImage

from tests.conftest import CeleryWorker, purge_queues, wait_for
from tests.webapp.conftest import png_bytes
from webapp.images import services
from webapp.images.intake.ingest import DUPLICATE, IncomingFile, archive_ingest, images_ingest
from webapp.images.models import Image, ThumbnailState

pytestmark = pytest.mark.integration


def incoming(seeds, *, on_read=None) -> list[IncomingFile]:
    def read(seed: int) -> bytes:
        if on_read:
            on_read(seed)
        return png_bytes(seed, size=32)

    return [IncomingFile(name=f"part_{seed}.png", read=lambda s=seed: read(s)) for seed in seeds]


def queued_ids(url: str) -> list[int]:
    """The image ids of every thumbnail message waiting on the default queue."""
    import json

    ids = []
    for raw in redis.Redis.from_url(url).lrange("default", 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "images.thumbnails_make"
        body = json.loads(__import__("base64").b64decode(message["body"]))
        ids += body[0][0]
    return ids


def later(minutes: float = 0) -> timezone.datetime:
    return timezone.now() + services.THUMBNAIL_STALE_AFTER + timedelta(seconds=1, minutes=minutes)


def test_an_upload_sends_thumbnail_work_as_each_chunk_commits(transactional_db, project, owner, broker):
    # given an upload of two and a half chunks, outside any transaction (as a request is)
    purge_queues(broker.url)
    chunk = services.THUMBNAIL_CHUNK
    sent_while_reading: dict[int, int] = {}
    files = incoming(
        range(chunk * 2 + 5), on_read=lambda seed: sent_while_reading.update({seed: len(queued_ids(broker.url))})
    )
    # when it is taken in
    report = images_ingest(project=project, user=owner, files=files)
    # then the first chunk's work was on the queue before the next chunk was read (a process dying mid-upload
    # strands no more than one chunk), and every added image is queued exactly once, marked as sent
    assert report.added == chunk * 2 + 5
    assert (
        sent_while_reading[0] == 0 and sent_while_reading[chunk] == chunk and sent_while_reading[2 * chunk] == 2 * chunk
    )
    ids = queued_ids(broker.url)
    assert sorted(ids) == sorted(Image.objects.filter(project=project).values_list("id", flat=True))
    assert not Image.objects.filter(thumbnail_queued_at__isnull=True).exists()


def test_the_periodic_check_sends_quiet_work_again_and_gives_up_after_the_cap(transactional_db, project, owner, broker):
    purge_queues(broker.url)
    images_ingest(project=project, user=owner, files=incoming(range(5)))
    purge_queues(broker.url)  # every message lost (a Redis restarted without its file, say)
    a, b, c, d, e = Image.objects.order_by("id")
    Image.objects.filter(id=b.id).update(thumbnail_queued_at=None)  # committed, never sent (web worker killed)
    Image.objects.filter(id=c.id).update(thumbnail_attempts=services.THUMBNAIL_MAX_ATTEMPTS)  # killed its worker 3x
    Image.objects.filter(id=d.id).update(thumbnail_state=ThumbnailState.READY)
    Image.objects.filter(id=e.id).update(thumbnail_queued_at=later())  # sent a moment ago: still on its way
    # when the check runs now, nothing is due yet
    assert services.thumbnails_requeue_stale() == {"requeued": 0, "failed": 0}
    # when it runs a minute later
    result = services.thumbnails_requeue_stale(now=later())
    # then the quiet pending ones are back on the queue, the capped one failed with its reason
    assert result == {"requeued": 2, "failed": 1}
    assert sorted(queued_ids(broker.url)) == [a.id, b.id]
    capped = Image.objects.get(id=c.id)
    assert capped.thumbnail_state == ThumbnailState.FAILED
    assert capped.thumbnail_error == services.THUMBNAIL_GAVE_UP.format(attempts=services.THUMBNAIL_MAX_ATTEMPTS)
    assert Image.objects.get(id=e.id).thumbnail_state == ThumbnailState.PENDING


def test_the_check_runs_on_the_beat_schedule_often_enough():
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "images.thumbnails_requeue")
    assert entry["schedule"] == services.THUMBNAIL_CHECK_SECONDS
    from workers.celery import app

    app.loader.import_default_modules()  # the include list: every app's tasks module

    assert "images.thumbnails_requeue" in app.tasks


@pytest.mark.parametrize("state", [ThumbnailState.PENDING, ThumbnailState.FAILED])
def test_sending_a_file_again_retries_its_missing_thumbnail(transactional_db, project, owner, broker, state):
    purge_queues(broker.url)
    images_ingest(project=project, user=owner, files=incoming([7, 8]))
    purge_queues(broker.url)
    stuck, fine = Image.objects.order_by("id")
    Image.objects.filter(id=stuck.id).update(thumbnail_state=state, thumbnail_attempts=3, thumbnail_error="killed")
    Image.objects.filter(id=fine.id).update(thumbnail_state=ThumbnailState.READY)
    # when both are uploaded again
    report = images_ingest(project=project, user=owner, files=incoming([7, 8]))
    # then both are duplicates, but the one without a thumbnail is pending with fresh attempts and queued again
    assert [r.status for r in report.results] == [DUPLICATE, DUPLICATE]
    stuck.refresh_from_db()
    assert (stuck.thumbnail_state, stuck.thumbnail_attempts, stuck.thumbnail_error) == (ThumbnailState.PENDING, 0, "")
    assert queued_ids(broker.url) == [stuck.id]
    assert Image.objects.get(id=fine.id).thumbnail_state == ThumbnailState.READY


def slow_zip(count: int) -> io.BytesIO:
    """Noise PNGs big enough that one thumbnail task takes a few seconds (time to kill its process)."""
    rng = np.random.default_rng(3)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            picture = PILImage.fromarray(rng.integers(0, 255, (1400, 1400, 3), dtype=np.uint8))
            data = io.BytesIO()
            picture.save(data, format="PNG", compress_level=0)
            archive.writestr(f"noise_{i}.png", data.getvalue())
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("victim", ["pool child", "whole worker"])
def test_thumbnails_lost_with_a_killed_worker_are_made_after_the_check(
    transactional_db, project, owner, broker, tmp_path, victim
):
    # given a worker making the thumbnails of one chunk
    purge_queues(broker.url)
    worker = CeleryWorker(broker.url, "default", tmp_path / "first.log")
    worker.start()
    count = services.THUMBNAIL_CHUNK
    replacement = None
    try:
        archive_ingest(project=project, user=owner, fileobj=slow_zip(count), archive_name="noise.zip")
        pending = Image.objects.filter(project=project, thumbnail_state=ThumbnailState.PENDING)
        wait_for(lambda: pending.count() < count, timeout=60, interval=0.05, message=worker.log_text()[-2000:])
        # when its process dies mid-task (what the OOM killer does)
        main, *children = worker.pids()
        victims = children if victim == "pool child" else [main, *children]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        if victim == "pool child":
            wait_for(lambda: "WorkerLostError" in worker.log_text(), timeout=30, message=worker.log_text()[-2000:])
        else:
            worker.process.wait(10)
            replacement = CeleryWorker(broker.url, "default", tmp_path / "second.log")
            replacement.start()
        time.sleep(3)
        # then the rest of that chunk stays pending: Celery acknowledged the message (a pool child) or left it
        # unacknowledged for the visibility timeout (the whole worker); nothing redelivers it soon
        stranded = pending.count()
        assert 0 < stranded < count
        assert redis.Redis.from_url(broker.url).llen("default") == 0
        # when the periodic check runs a minute later
        assert services.thumbnails_requeue_stale(now=later())["requeued"] == stranded
        # then every image gets its thumbnail; one being made when the process died may count a second try
        survivor = replacement or worker
        wait_for(lambda: not pending.exists(), timeout=90, message=survivor.log_text()[-2000:])
        images = Image.objects.filter(project=project)
        assert images.filter(thumbnail_state=ThumbnailState.READY).count() == count
        assert set(images.values_list("thumbnail_attempts", flat=True)) <= {1, 2}
    finally:
        worker.stop()
        if replacement:
            replacement.stop()


def test_the_grid_says_why_an_image_has_no_preview_and_stops_polling(client, transactional_db, project, owner, broker):
    from django.urls import reverse

    images_ingest(project=project, user=owner, files=incoming([3]))
    reason = services.THUMBNAIL_GAVE_UP.format(attempts=services.THUMBNAIL_MAX_ATTEMPTS)
    Image.objects.update(thumbnail_state=ThumbnailState.FAILED, thumbnail_error=reason)
    client.force_login(owner)
    response = client.get(reverse("image_grid", args=[project.public_id]))
    assert f'title="{reason}"' in response.text and "no preview" in response.text
    assert 'data-pending="0"' in response.text and "every 2s" not in response.text
