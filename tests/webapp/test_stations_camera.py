"""Camera sources against real cameras started here: an MJPEG-over-HTTP server process, and Debian's ffmpeg encoding
H.264 behind an RTSP front (tests/webapp/camera_servers.py), each on a free loopback port with a pid file; and
recorded shifts made by ffmpeg. Every frame carries its number, so the tests see which frames the source took."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.webapp.camera_servers import FFMPEG, HEIGHT, WIDTH, CameraServer, counter_frame, read_counter
from webapp.stations.sources import SOURCE_KINDS, SourceError, source_for
from webapp.stations.sources.camera import BACKOFF_MAX_S, ReplaySource, StreamSource

pytestmark = pytest.mark.skipif(
    not shutil.which("ffmpeg"), reason="Debian's ffmpeg (scripts/install_system_packages.sh --test)"
)


class Collector:
    """Runs a source's frames() in a thread, as the station runner does, and keeps what it yields."""

    def __init__(self, source, *, judge_seconds: float = 0.0):
        self.source = source
        self.judge_seconds = judge_seconds  # how long the station takes per frame
        self.stop = threading.Event()
        self.frames = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self.source.frames(self.stop):
                self.frames.append(frame)
                time.sleep(self.judge_seconds)
                self.source.done(frame, ok=True)
        except BaseException as error:  # noqa: BLE001 - the test asserts there was none
            self.error = error

    def wait_for(self, count: int, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"{len(self.frames)} of {count} frames in {timeout} s"
            time.sleep(0.02)
        return self.frames

    def wait_until(self, condition, timeout: float, what: str) -> float:
        started = time.monotonic()
        while not condition():
            assert self.error is None, self.error
            assert time.monotonic() - started < timeout, f"no {what} within {timeout} s: {self.source.health()}"
            time.sleep(0.02)
        return time.monotonic() - started

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "frames() did not end after stop"
        assert self.error is None, self.error


@pytest.fixture
def cameras(tmp_path):
    started: list[CameraServer] = []

    def start(kind: str, fps: float = 10) -> CameraServer:
        camera = CameraServer(kind, tmp_path / "cameras", fps=fps)
        camera.start()
        started.append(camera)
        return camera

    yield start
    for camera in started:
        camera.stop(kill=True)
    assert not list((tmp_path / "cameras").glob("*.pid*")), "a camera's pid file was left"


def test_mjpeg_stream_frames_come_at_the_rate_limit(cameras):
    # given: a camera sending 20 frames/s, a station taking 4/s
    camera = cameras("mjpeg", fps=20)
    source = source_for("mjpeg", {"url": camera.url, "max_fps": 4}, station_id=1)

    # when
    collector = Collector(source)
    first = collector.wait_for(1, timeout=15)[0]
    collector.frames.clear()
    time.sleep(2.0)
    collector.close()

    # then: RGB frames of the camera's size, about 4 a second, each a fresh frame (numbers ~5 apart, not 1)
    assert first.image.shape == (HEIGHT, WIDTH, 3) and first.image.dtype == np.uint8
    taken = collector.frames
    assert 5 <= len(taken) <= 10, len(taken)
    numbers = [read_counter(frame.image) for frame in taken]
    assert numbers == sorted(numbers)
    assert min(np.diff(numbers)) >= 3, numbers
    assert len({frame.name for frame in taken}) == len(taken) and all(frame.key == "" for frame in taken)
    assert source.health()["state"] == "ok"


def test_trigger_mode_releases_one_fresh_frame_per_trigger(cameras):
    # given
    camera = cameras("mjpeg", fps=20)
    source = source_for("mjpeg", {"url": camera.url, "mode": "trigger"}, station_id=1)
    collector = Collector(source)
    collector.wait_until(lambda: source.health()["state"] == "ok", timeout=15, what="connection")

    # when: nothing triggers for a second, then two parts arrive one second apart
    time.sleep(1.0)
    untriggered = len(collector.frames)
    source.trigger()
    collector.wait_for(1, timeout=5)
    time.sleep(1.0)
    pressed = time.time()
    source.trigger()
    first, second = collector.wait_for(2, timeout=5)
    time.sleep(0.5)
    collector.close()

    # then: no frame without a trigger, one per trigger, and the second shows the camera one second later (about
    # 20 frames on), not the frame that followed the first in the stream
    assert untriggered == 0
    assert len(collector.frames) == 2
    assert read_counter(second.image) - read_counter(first.image) >= 14
    assert second.captured_at >= pressed


def test_triggers_that_waited_past_their_timeout_while_the_station_was_busy_are_dropped(cameras):
    # given: a station that takes 1.5 s to judge a frame, and triggers valid for 0.5 s
    camera = cameras("mjpeg", fps=20)
    source = source_for("mjpeg", {"url": camera.url, "mode": "trigger", "trigger_timeout_s": 0.5}, station_id=1)
    collector = Collector(source, judge_seconds=1.5)
    collector.wait_until(lambda: source.health()["state"] == "ok", timeout=15, what="connection")

    # when: two parts pass while the first is judged, and one more arrives once the station is free
    source.trigger()
    collector.wait_for(1, timeout=5)
    source.trigger()
    source.trigger()
    time.sleep(2.0)
    missed_while_busy = len(collector.frames)
    source.trigger()
    collector.wait_for(2, timeout=5)
    collector.close()

    # then: the stale triggers got no (late) frame, the fresh one did, and the page says what was missed
    assert missed_while_busy == 1
    assert len(collector.frames) == 2
    assert "2 trigger(s) got no frame within 0.5 s" in source.health()["detail"]


def test_rtsp_stream_dropped_and_restored_reconnects_within_10_s(cameras):
    # given: an RTSP camera (ffmpeg's H.264) and a station taking frames as fast as it can
    camera = cameras("rtsp", fps=10)
    source = source_for("rtsp", {"url": camera.url, "max_fps": 0}, station_id=1)
    collector = Collector(source)
    before = collector.wait_for(5, timeout=20)
    numbers = [read_counter(f.image) for f in before]
    assert numbers == sorted(set(numbers))  # each frame taken is newer than the last (none twice, none older)
    assert "secret-pw" not in source.health()["detail"]

    # when: the camera goes away for 2 s
    camera.stop()
    collector.wait_until(lambda: source.health()["state"] == "reconnecting", timeout=10, what="reconnecting")
    time.sleep(2.0)
    count = len(collector.frames)
    camera.start()
    back_after = collector.wait_until(lambda: len(collector.frames) > count, timeout=10, what="frame after restore")
    collector.wait_for(count + 3, timeout=5)
    collector.close()

    # then: frames again within 10 s, from the new stream (it numbers its frames from 0 again), no crash
    assert back_after < 10
    assert read_counter(collector.frames[count].image) < read_counter(before[-1].image)
    assert source.reconnects >= 1
    print(f"RTSP back {back_after:.1f} s after the camera restarted")


def test_an_rtsp_stream_gone_silent_counts_as_dropped_and_frames_resume_when_it_speaks_again(cameras):
    # given
    camera = cameras("rtsp", fps=10)
    source = source_for("rtsp", {"url": camera.url, "max_fps": 0}, station_id=1)
    collector = Collector(source)
    collector.wait_for(3, timeout=20)

    # when: the camera goes silent without closing the connection (a pulled cable), then comes back
    camera.freeze()
    noticed_after = collector.wait_until(
        lambda: source.health()["state"] == "reconnecting", timeout=15, what="a silent stream noticed"
    )
    count = len(collector.frames)
    camera.freeze(False)
    back_after = collector.wait_until(lambda: len(collector.frames) > count, timeout=10, what="frame after thaw")
    collector.close()

    # then: noticed within about three read timeouts (2 s each), streaming again well within 10 s
    assert noticed_after < 10
    assert back_after < 10
    print(f"RTSP silence noticed after {noticed_after:.1f} s, frames again {back_after:.1f} s after it resumed")


def test_mjpeg_camera_killed_mid_stream_and_restarted_reconnects(cameras):
    # given
    camera = cameras("mjpeg", fps=10)
    source = StreamSource({"url": camera.url, "max_fps": 0}, station_id=1, kind="mjpeg")
    collector = Collector(source)
    collector.wait_for(3, timeout=15)

    # when: the camera loses power (SIGKILL: no goodbye on the connection) and comes back after 3 s
    camera.stop(kill=True)
    collector.wait_until(lambda: source.health()["state"] == "reconnecting", timeout=10, what="reconnecting")
    assert "next try in" in source.health()["detail"]
    time.sleep(3.0)
    count = len(collector.frames)
    camera.start()
    back_after = collector.wait_until(lambda: len(collector.frames) > count, timeout=10, what="frame after restore")
    collector.close()

    # then
    assert back_after < BACKOFF_MAX_S + 5
    assert source.health()["state"] == "ok"


def test_a_trigger_no_frame_can_answer_is_dropped_and_reported(tmp_path):
    # given: a camera that is not there
    from tests.conftest import free_port

    source = source_for(
        "mjpeg", {"url": f"http://127.0.0.1:{free_port()}/video.mjpg", "mode": "trigger", "trigger_timeout_s": 0.3},
        station_id=1,
    )  # fmt: skip
    collector = Collector(source)

    # when
    source.trigger()
    collector.wait_until(lambda: "got no frame" in source.health()["detail"], timeout=5, what="missed trigger")
    collector.close()

    # then: no frame later on for that trigger, and the station says why
    assert collector.frames == []
    assert source.health()["state"] == "reconnecting"
    assert "1 trigger(s) got no frame within 0.3 s" in source.health()["detail"]


def _record(path: Path, count: int, fps: int = 10) -> Path:
    """A recorded shift: `count` numbered frames encoded by Debian's ffmpeg (H.264 in MP4)."""
    frames = path.parent / f"{path.stem}-frames"
    frames.mkdir(parents=True)
    for number in range(count):
        PILImage.fromarray(counter_frame(number)).save(frames / f"{number:04d}.png")
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-framerate", str(fps), "-i", str(frames / "%04d.png"),
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def test_a_recorded_video_is_replayed_frame_by_frame_and_then_idles(tmp_path):
    # given
    video = _record(tmp_path / "shift.mp4", 24)

    # when: replayed as fast as judged, every 3rd frame
    source = source_for("video", {"path": str(video), "fps": 0, "every": 3}, station_id=1)
    collector = Collector(source)
    frames = collector.wait_for(8, timeout=20)
    collector.wait_until(lambda: "finished" in source.health()["detail"], timeout=5, what="end of replay")
    collector.close()

    # then: frames 0, 3, ... 21 in order, each with its own key (a restarted runner skips what it judged)
    assert [read_counter(f.image) for f in frames] == list(range(0, 24, 3))
    assert len({f.key for f in frames}) == 8 and all(f.key.startswith("replay:") for f in frames)
    assert [f.name for f in frames[:2]] == ["shift-000000", "shift-000003"]
    assert source.health() == {"state": "ok", "detail": f"replay of {video} finished: 8 frames"}


def test_a_replay_at_the_recording_rate_takes_its_time_and_a_loop_has_no_keys(tmp_path):
    # given: 10 frames recorded at 10 frames/s
    video = _record(tmp_path / "loop.mp4", 10)
    source = ReplaySource({"path": str(video), "loop": True}, station_id=1)

    # when
    started = time.monotonic()
    collector = Collector(source)
    frames = collector.wait_for(15, timeout=20)
    elapsed = time.monotonic() - started
    collector.close()

    # then: played at its own rate (15 frames: about 1.4 s), round again after the end, keys empty (seen again
    # on purpose)
    assert elapsed >= 1.2
    assert [read_counter(f.image) for f in frames[8:12]] == [8, 9, 0, 1]
    assert all(f.key == "" for f in frames)


def test_an_image_sequence_is_replayed_in_natural_order_skipping_a_broken_file(tmp_path):
    # given: a camera's numbered files (frame-2 before frame-10) and one truncated file
    folder = tmp_path / "sequence"
    folder.mkdir()
    for number in (1, 2, 10):
        PILImage.fromarray(counter_frame(number)).save(folder / f"frame-{number}.png")
    (folder / "frame-5.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    # when
    source = source_for("video", {"path": str(folder)}, station_id=1)
    collector = Collector(source)
    frames = collector.wait_for(3, timeout=10)
    collector.wait_until(lambda: "finished" in source.health()["detail"], timeout=5, what="end of replay")
    collector.close()

    # then
    assert [f.name for f in frames] == ["frame-1.png", "frame-2.png", "frame-10.png"]
    assert [read_counter(f.image) for f in frames] == [1, 2, 10]
    # and each frame carries its file's bytes, kept as the stored input instead of a re-encoding
    assert frames[2].data == (folder / "frame-10.png").read_bytes() and frames[2].extension == ".png"


def _run_station_until(condition, *, what: str, timeout: float = 90) -> None:
    """A station runner in a thread (as `manage.py run_stations` runs it) until `condition()` holds."""
    from tests.conftest import wait_for
    from webapp.stations.runner import Runner

    stop = threading.Event()
    runner = threading.Thread(target=Runner(lease_seconds=2).run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(condition, timeout=timeout, message=what)
    finally:
        stop.set()
        runner.join(30)


def test_a_recorded_shift_replayed_by_a_station_is_judged_once_even_when_replayed_again(
    trained_version, owner, tmp_path
):
    from webapp.stations import services
    from webapp.stations.models import Inspection, Station

    # given: a station replaying a recorded shift of 12 frames
    video = _record(tmp_path / "shift.mp4", 12)
    station = services.station_create(
        project=trained_version.project, user=owner, name="Replay", source_kind="video",
        source_settings={"path": str(video), "fps": 0},
    )  # fmt: skip

    def finished() -> bool:
        return "finished" in Station.objects.get(id=station.id).source_health.get("detail", "")

    # when: a runner replays it to the end, then a restarted runner replays the same file again
    _run_station_until(lambda: Inspection.objects.filter(station=station).count() == 12, what="12 verdicts")
    Station.objects.filter(id=station.id).update(source_health={})
    _run_station_until(finished, what="the second replay to finish")

    # then: each frame judged once, in order, with a verdict
    inspections = list(Inspection.objects.filter(station=station).order_by("id"))
    assert [i.name for i in inspections] == [f"shift-{n:06d}" for n in range(12)]
    assert all(i.verdict in ("ok", "ng", "review") for i in inspections)


@pytest.mark.parametrize(
    "kind, given, message",
    [
        ("rtsp", {}, "a rtsp source needs a url"),
        ("rtsp", {"url": "http://camera/video.mjpg"}, "a rtsp source's url starts with rtsp:// or rtsps://"),
        ("mjpeg", {"url": "rtsp://camera/stream"}, "a mjpeg source's url starts with http:// or https://"),
        ("mjpeg", {"url": "http://camera/v.mjpg", "mode": "burst"}, 'mode must be "rate"'),
        ("mjpeg", {"url": "http://camera/v.mjpg", "max_fps": "fast"}, "max_fps must be a number"),
        ("video", {"path": "/nowhere/shift.mp4"}, "no video or image folder at /nowhere/shift.mp4"),
    ],
)
def test_settings_a_camera_source_cannot_work_with_are_refused_with_the_reason(kind, given, message):
    with pytest.raises(SourceError) as refused:
        source_for(kind, given, station_id=1)
    assert str(refused.value).startswith(message)


def test_the_camera_kinds_are_registered():
    assert {"rtsp", "mjpeg", "video"} <= set(SOURCE_KINDS)
    assert isinstance(source_for("rtsp", {"url": "rtsp://cam/live"}, station_id=1), StreamSource)
