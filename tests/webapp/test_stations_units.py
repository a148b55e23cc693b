"""Station pieces without a model: the rules, the watched folder, the outbox's backoff and the webhook signature."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from webapp.stations.outbox import backoff_seconds
from webapp.stations.rules import NEEDS_SCALE, Region, decide, rules_validate
from webapp.stations.sinks.webhook import signature
from webapp.stations.sources import SourceError, source_for
from webapp.stations.sources.folder import FolderSource

# --- rules -------------------------------------------------------------------------------------------------------


def region(area: int, defect_class: str = "defect") -> Region:
    return Region(x0=0, y0=0, x1=10, y1=10, area_px=area, defect_class=defect_class)


def test_the_threshold_alone_decides_without_region_rules():
    assert decide(normalised_score=0.49, regions=[], rules={}).verdict == "ok"
    assert decide(normalised_score=0.5, regions=[], rules={}).verdict == "ng"


def test_the_review_band_includes_its_edges_and_wins_over_the_threshold():
    rules = rules_validate({"review_band": [0.4, 0.6]})
    assert [decide(normalised_score=s, regions=[], rules=rules).verdict for s in (0.39, 0.4, 0.55, 0.6, 0.61)] == [
        "ok",
        "review",
        "review",
        "review",
        "ng",
    ]


def test_regions_below_the_minimum_area_do_not_make_a_part_ng():
    rules = rules_validate({"regions": [{"class": "*", "min_area_px": 50, "max_count": 0}]})
    assert decide(normalised_score=0.9, regions=[region(49), region(10)], rules=rules).verdict == "ok"
    decision = decide(normalised_score=0.9, regions=[region(49), region(50)], rules=rules)
    assert decision.verdict == "ng" and [r.area_px for r in decision.counted] == [50]


def test_area_in_square_millimetres_uses_the_scale_and_max_count_allows_some():
    # 10 px per mm: 1 mm² is 100 px
    rules = rules_validate(
        {"pixels_per_mm": 10, "regions": [{"class": "scratch", "min_area_mm2": 1, "max_count": 1}, {"class": "*"}]}
    )
    assert decide(normalised_score=0.8, regions=[region(150, "scratch")], rules=rules).verdict == "ok"
    assert decide(normalised_score=0.8, regions=[region(150, "scratch")] * 2, rules=rules).verdict == "ng"
    assert decide(normalised_score=0.8, regions=[region(99, "scratch")] * 3, rules=rules).verdict == "ok"
    # another class falls to the catch-all rule: any area, none allowed
    assert decide(normalised_score=0.8, regions=[region(1, "dent")], rules=rules).verdict == "ng"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"review_band": [0.7, 0.3]}, "review band"),
        ({"pixels_per_mm": 0}, "pixels_per_mm"),
        ({"regions": [{"class": "*", "min_area_mm2": 1}]}, NEEDS_SCALE),
        ({"regions": [{"class": "", "max_count": 1}]}, "region rule"),
        ({"regions": [{"class": "*", "max_count": -1}]}, "region rule"),
    ],
)
def test_bad_rules_are_refused_with_a_message(rules, message):
    with pytest.raises(ValueError, match=message.split("(")[0][:20]):
        rules_validate(rules)


# --- the watched folder ----------------------------------------------------------------------------------------


def write_png(path, value: int = 128, size: int = 16) -> None:
    PILImage.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, format="PNG")


def take(source, count: int, timeout: float = 5.0):
    """The first `count` frames the source yields (it runs in a thread until stopped)."""
    stop = threading.Event()
    frames = []

    def run():
        for frame in source.frames(stop):
            frames.append(frame)
            if len(frames) >= count:
                stop.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    stop.set()
    thread.join(5)
    return frames


def test_a_file_renamed_into_place_is_taken_at_once_and_moved_to_done(tmp_path):
    partial = tmp_path / ".part-1.png.part"
    write_png(partial)
    os.replace(partial, tmp_path / "part-1.png")
    source = FolderSource({"path": str(tmp_path), "poll_seconds": 0.02}, station_id=1)
    (frame,) = take(source, 1)
    assert frame.name == "part-1.png" and frame.image.shape == (16, 16, 3) and frame.image.dtype == np.uint8
    assert frame.key.startswith("part-1.png:")
    source.done(frame, ok=True)
    assert (tmp_path / "done" / "part-1.png").exists() and not (tmp_path / "part-1.png").exists()


def test_a_file_still_being_written_waits_until_its_size_is_stable(tmp_path):
    source = FolderSource({"path": str(tmp_path), "poll_seconds": 0.05}, station_id=1)
    growing = tmp_path / "slow.png"
    complete = tmp_path / "complete.bin"
    write_png(complete)
    data = complete.read_bytes()
    complete.unlink()
    stop = threading.Event()
    seen = []

    def run():
        for frame in source.frames(stop):
            seen.append((frame.name, time.monotonic()))

    with growing.open("wb") as handle:  # written in place, in pieces, like a slow network copy
        handle.write(data[:20])
        handle.flush()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(0.3)
        assert seen == []  # half a PNG is never read
        handle.write(data[20:])
    finished = time.monotonic()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(5)
    assert [name for name, _ in seen] == ["slow.png"]
    assert seen[0][1] >= finished


def test_temporary_names_are_ignored_and_unreadable_files_go_to_failed_with_the_reason(tmp_path):
    write_png(tmp_path / "upload.png.part")
    write_png(tmp_path / ".hidden.png")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG but not really")
    write_png(tmp_path / "good.png")
    source = FolderSource({"path": str(tmp_path), "poll_seconds": 0.02}, station_id=1)
    frames = take(source, 1, timeout=2)
    assert [f.name for f in frames] == ["good.png"]
    assert (tmp_path / "failed" / "garbage.png").exists()
    assert (tmp_path / "failed" / "garbage.png.txt").read_text().strip()
    assert (tmp_path / "upload.png.part").exists() and (tmp_path / ".hidden.png").exists()


def test_delete_mode_removes_judged_files_and_a_failed_judgement_files_them_under_failed(tmp_path):
    for name in ("a.png", "b.png"):
        write_png(tmp_path / f".{name}")
        os.replace(tmp_path / f".{name}", tmp_path / name)
    source = FolderSource({"path": str(tmp_path), "poll_seconds": 0.02, "after": "delete"}, station_id=1)
    first, second = sorted(take(source, 2), key=lambda f: f.name)
    source.done(first, ok=True)
    source.done(second, ok=False, reason="prediction failed: boom")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "done" / "a.png").exists()
    assert (tmp_path / "failed" / "b.png.txt").read_text().strip() == "prediction failed: boom"


def test_source_settings_are_checked():
    with pytest.raises(SourceError, match="path"):
        source_for("folder", {}, station_id=1)
    with pytest.raises(SourceError, match="after"):
        source_for("folder", {"path": "/tmp", "after": "shred"}, station_id=1)
    with pytest.raises(SourceError, match="unknown source kind"):
        source_for("carrier-pigeon", {}, station_id=1)


# --- outbox and webhook ------------------------------------------------------------------------------------------


def test_backoff_doubles_from_half_a_second_up_to_a_minute():
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_seconds(30) == 60.0


def test_the_webhook_signature_is_hmac_sha256_of_the_body():
    # the RFC 4231 test case 2 key and data
    assert signature("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_a_region_takes_the_class_of_the_detection_over_it():
    from webapp.inference.services import Box
    from webapp.stations.services import regions_from_boxes

    boxes = [Box(x0=0, y0=0, x1=10, y1=10, area=60), Box(x0=50, y0=50, x1=60, y1=60, area=30)]
    detections = [{"box": [48, 49, 61, 60], "label": "scratch", "confidence": 0.9}]
    regions = regions_from_boxes(boxes, detections)
    assert [r.defect_class for r in regions] == ["defect", "scratch"]
    rules = rules_validate({"regions": [{"class": "scratch", "min_area_px": 20}, {"class": "*", "min_area_px": 100}]})
    assert decide(normalised_score=0.9, regions=regions, rules=rules).reasons == [
        "1 scratch region(s) over the minimum area (at most 0 allowed)"
    ]
