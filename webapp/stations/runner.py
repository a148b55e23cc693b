"""The station runner behind `manage.py run_stations`: claims stations with a lease, runs each in a thread of its
own (source -> model -> rules -> verdict + outbox), and one delivery loop per sink.

Several runners, on one machine or many, share the stations: a runner claims only stations whose lease is free or
expired (a conditional UPDATE), renews its leases every lease/3 seconds and stops a station whose lease it lost,
that was paused or whose settings changed (restarted with the new ones). A runner killed outright stops renewing;
its stations are claimed by another runner once the lease expires (30 s by default, so within a minute).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from django.db import IntegrityError, close_old_connections, connection
from PIL import Image as PILImage

from webapp.inference.detections import stored_detections
from webapp.inference.predictions import predicted_mask, prediction_store
from webapp.inference.services import PREDICT_MAX_SIDE, mask_boxes, model_for_version, version_calibration
from webapp.stations import services
from webapp.stations.models import Station
from webapp.stations.outbox import DeliveryLoop
from webapp.stations.rules import decide
from webapp.stations.sinks import sender_for
from webapp.stations.sources import source_for
from webapp.stations.triggers import DatabaseTriggerWatcher, MqttTriggerListener

log = logging.getLogger(__name__)

NO_MODEL = "No model to run: train and activate a version, or pin one."
RETRY_AFTER_ERROR_S = 5.0
TRIM_EVERY_S = 60.0


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _fitted(image: np.ndarray) -> np.ndarray:
    """Frames larger than the inference service accepts are shrunk the same way (longer side PREDICT_MAX_SIDE)."""
    height, width = image.shape[:2]
    if max(height, width) <= PREDICT_MAX_SIDE:
        return image
    scale = PREDICT_MAX_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(PILImage.fromarray(image).resize(size, PILImage.BILINEAR))


PREFETCH_DEPTH = 2
PIPELINE_DEPTH = 2  # frames judged by the model and waiting to be stored
_END = object()


def prefetched(frames: Iterator, stop: threading.Event, *, name: str) -> Iterator:
    """Runs a source's frame iterator in a thread of its own, `PREFETCH_DEPTH` frames ahead, so reading and decoding
    the next file overlaps with judging this one. Only for sources that say they may be read ahead (`prefetch`):
    a camera must hand over a frame taken when the station asked, not one that waited in a queue."""
    handoff: queue.Queue = queue.Queue(maxsize=PREFETCH_DEPTH)

    def produce() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        handoff.put(frame, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            handoff.put(error)
            return
        handoff.put(_END)

    threading.Thread(target=produce, name=name, daemon=True).start()
    while True:
        try:
            item = handoff.get(timeout=0.2)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class StationWorker(threading.Thread):
    def __init__(self, *, station: Station, runner: str):
        super().__init__(name=f"station-{station.id}", daemon=True)
        self.station_id = station.id
        self.runner = runner
        self.revision = station.revision
        self.version_id: int | None = None
        self.stop = threading.Event()
        self.source = None
        self.senders: dict[int, object] = {}
        self.processed = 0

    def source_health(self) -> dict:
        if self.source is None:
            return {"state": "starting", "detail": "loading the model"}
        try:
            return self.source.health()
        except Exception as error:  # noqa: BLE001 - a health probe never stops the station
            return {"state": "error", "detail": str(error)[:200]}

    def sink_health(self) -> dict[int, dict]:
        return {sink_id: sender.health() for sink_id, sender in self.senders.items()}

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self._run_once()
                except services.LeaseLost:
                    log.info("station %s: lease lost, stopping", self.station_id)
                    return
                except Exception as error:
                    log.exception("station %s failed; restarting in %.0f s", self.station_id, RETRY_AFTER_ERROR_S)
                    close_old_connections()
                    try:
                        services.station_report(station_id=self.station_id, runner=self.runner, error=str(error))
                    except Exception:  # noqa: BLE001 - the database itself may be what failed
                        log.exception("station %s: could not record the error", self.station_id)
                    self.stop.wait(RETRY_AFTER_ERROR_S)
        finally:
            connection.close()

    def _run_once(self) -> None:
        station = Station.objects.select_related("project", "pinned_version").get(id=self.station_id)
        version = services.station_version(station=station)
        if version is None:
            services.station_report(station_id=station.id, runner=self.runner, error=NO_MODEL)
            self.stop.wait(RETRY_AFTER_ERROR_S)
            return
        self.version_id = version.id
        model_for_version(version)  # loaded once here, then every frame predicts in this process
        rules = services.station_rules_in_force(station=station)
        source = source_for(station.source_kind, station.source_settings, station_id=station.id)
        sinks_stop = threading.Event()
        loops: list[DeliveryLoop] = []
        mqtt_triggers = None
        try:
            if hasattr(source, "trigger"):
                DatabaseTriggerWatcher(station_id=station.id, source=source, stop=sinks_stop).start()
                if isinstance(station.source_settings.get("trigger_mqtt"), dict):
                    mqtt_triggers = MqttTriggerListener(
                        station_id=station.id, source=source, settings=station.source_settings["trigger_mqtt"]
                    )
            for sink in station.sinks.all():
                sender = sender_for(sink.kind, sink.settings, station_id=station.id, sink_id=sink.id)
                self.senders[sink.id] = sender
                loop = DeliveryLoop(sink=sink, sender=sender, stop=sinks_stop, wake=threading.Event())
                loop.start()
                loops.append(loop)
            self.source = source
            services.station_report(station_id=station.id, runner=self.runner, error="", version=version)
            frames = source.frames(self.stop)
            if getattr(source, "prefetch", False):
                frames = prefetched(frames, self.stop, name=f"station-{station.id}-read")
            recorder = Recorder(worker=self, station=station, version=version, rules=rules, loops=loops)
            recorder.start()
            try:
                for frame in frames:
                    judged = self._judge(station=station, version=version, frame=frame)
                    if judged is not None:
                        recorder.put(judged)
            finally:
                recorder.finish()
            if recorder.error is not None:
                raise recorder.error
        finally:
            sinks_stop.set()
            if mqtt_triggers is not None:
                mqtt_triggers.close()
            for loop in loops:
                loop.join(10)
            for sender in self.senders.values():
                try:
                    sender.close()
                except Exception:  # noqa: BLE001 - closing is best effort; the process may be going away
                    log.exception("station %s: closing a sink failed", self.station_id)
            self.senders = {}
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _judge(self, *, station: Station, version, frame):
        """The model's output for a frame, or None when the frame needs no verdict (judged before) or failed."""
        if frame.key and services.inspection_key_seen(station_id=station.id, key=frame.key):
            # judged before a crash, not yet moved to done/: move it now, do not judge it again
            self.source.done(frame, ok=True)
            return None
        image = _fitted(frame.image)
        try:
            (prediction,) = model_for_version(version).predict([image])
        except Exception as error:  # noqa: BLE001 - one bad frame must not stop the line
            log.exception("station %s: prediction failed for %s", station.id, frame.name)
            services.station_failed_count(station_id=station.id)
            self.source.done(frame, ok=False, reason=f"prediction failed: {error}")
            return None
        return frame, image, prediction

    def record(self, *, station: Station, version, rules: dict, calibration, frame, image, prediction) -> None:
        """Stores the prediction (map, mask) and the verdict with its outbox messages, then lets the source move
        the file. Raises LeaseLost."""
        purpose = services.STATION_PURPOSE
        row = prediction_store(
            version=version, image=None, prediction=prediction, calibration=calibration, purpose=purpose
        )
        boxes = mask_boxes(predicted_mask(prediction, calibration.threshold))
        detections = None
        if boxes and services.rules_name_classes(rules):  # the classes are read back only when rules use them
            detections = stored_detections(row)["detections"]
        regions = services.regions_from_boxes(boxes, detections)
        decision = decide(normalised_score=row.normalised_score, regions=regions, rules=rules)
        try:
            services.inspection_record(
                station=station,
                runner=self.runner,
                name=frame.name,
                key=frame.key,
                captured_at=frame.captured_at,
                image=image,
                prediction=row,
                regions=decision.counted if rules.get("regions") else regions,
                decision=decision,
                version=version,
                rules=rules,
                data=frame.data if image is frame.image else b"",  # a shrunk frame is stored as judged
                extension=frame.extension,
            )
        except IntegrityError:
            log.info("station %s: %s was judged already", station.id, frame.name)
        self.processed += 1
        self.source.done(frame, ok=True)


class Recorder(threading.Thread):
    """Stores predictions and verdicts, in arrival order, while the model judges the next frame: on two cores the
    model (ONNX Runtime) and the storing (PNG encoding of map and mask, the database) then run side by side. A
    failure (a lost lease) stops the recording; frames not yet recorded stay in their source for the next run."""

    def __init__(self, *, worker: StationWorker, station: Station, version, rules: dict, loops: list):
        super().__init__(name=f"station-{station.id}-record", daemon=True)
        self.worker, self.station, self.version, self.rules, self.loops = worker, station, version, rules, loops
        self.calibration = version_calibration(version)
        self.pending: queue.Queue = queue.Queue(maxsize=PIPELINE_DEPTH)
        self.error: BaseException | None = None

    def put(self, judged: tuple) -> None:
        """Hands over a judged frame (blocks while the recorder is behind); raises what stopped the recorder."""
        while self.error is None:
            try:
                self.pending.put(judged, timeout=0.2)
                return
            except queue.Full:
                continue
        raise self.error

    def finish(self) -> None:
        """Records what is queued, then ends the thread."""
        while self.is_alive():
            try:
                self.pending.put(_END, timeout=0.2)
                break
            except queue.Full:
                continue
        self.join()

    def run(self) -> None:
        try:
            while (item := self.pending.get()) is not _END:
                if self.error is not None:
                    continue
                frame, image, prediction = item
                try:
                    self.worker.record(
                        station=self.station,
                        version=self.version,
                        rules=self.rules,
                        calibration=self.calibration,
                        frame=frame,
                        image=image,
                        prediction=prediction,
                    )
                except BaseException as error:  # noqa: BLE001 - handed to the station thread, which raises it
                    self.error = error
                    continue
                for loop in self.loops:
                    loop.wake.set()
        finally:
            connection.close()


class Runner:
    """Claims and runs stations until `stop` is set. `max_stations` caps how many this runner takes."""

    def __init__(
        self,
        *,
        name: str | None = None,
        lease_seconds: float = 30.0,
        max_stations: int | None = None,
        keep_images: int = 1000,
        alive_file: str = "",
    ):
        self.name = name or runner_name()
        self.alive_file = alive_file
        self.keep_images = keep_images
        self._trimmed_at = 0.0
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = max(0.2, lease_seconds / 3)
        self.max_stations = max_stations
        self.workers: dict[int, StationWorker] = {}

    def run(self, stop: threading.Event) -> None:
        log.info("station runner %s started (lease %.0f s)", self.name, self.lease_seconds)
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - e.g. the database restarting; keep going, leases will tell
                    log.exception("runner tick failed")
                    close_old_connections()
                stop.wait(self.heartbeat_seconds)
        finally:
            self.shutdown()
            connection.close()  # this thread's own; a runner in a thread must not leave it open

    def tick(self) -> None:
        close_old_connections()
        self._renew()
        self._claim()
        if self.alive_file:  # for a container health check: a tick that completes is a live runner
            Path(self.alive_file).touch()
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            self._trimmed_at = time.monotonic()
            for station_id in list(self.workers):
                services.station_images_trim(station_id=station_id, keep=self.keep_images)

    def _renew(self) -> None:
        current = {
            row["id"]: row
            for row in Station.objects.filter(id__in=list(self.workers)).values(
                "id", "revision", "pinned_version_id", "project_id", "paused"
            )
        }
        for station_id, worker in list(self.workers.items()):
            row = current.get(station_id)
            health = worker.source_health()
            kept = row is not None and services.station_heartbeat(
                station_id=station_id, runner=self.name, lease_seconds=self.lease_seconds, source_health=health
            )
            for sink_id, sink_health in worker.sink_health().items():
                services.sink_health_save(sink_id=sink_id, health=sink_health)
            if not kept or not worker.is_alive():
                self._stop_worker(station_id, release=row is not None and row["paused"])
                continue
            if row["revision"] != worker.revision or self._version_changed(row, worker):
                log.info("station %s changed; restarting it", station_id)
                self._stop_worker(station_id, release=False)
                self._start(station_id)

    @staticmethod
    def _version_changed(row: dict, worker: StationWorker) -> bool:
        if worker.version_id is None or row["pinned_version_id"]:
            return bool(row["pinned_version_id"]) and row["pinned_version_id"] != worker.version_id
        from webapp.training.models import ModelVersion

        active = ModelVersion.objects.filter(project_id=row["project_id"], is_active=True).values_list("id", flat=True)
        return active.first() not in (None, worker.version_id)

    def _claim(self) -> None:
        for station_id in services.stations_claimable():
            if self.max_stations is not None and len(self.workers) >= self.max_stations:
                return
            if station_id in self.workers:
                continue
            if services.station_claim(station_id=station_id, runner=self.name, lease_seconds=self.lease_seconds):
                log.info("runner %s claimed station %s", self.name, station_id)
                self._start(station_id)

    def _start(self, station_id: int) -> None:
        station = Station.objects.get(id=station_id)
        worker = StationWorker(station=station, runner=self.name)
        self.workers[station_id] = worker
        worker.start()

    def _stop_worker(self, station_id: int, *, release: bool) -> None:
        worker = self.workers.pop(station_id)
        worker.stop.set()
        worker.join(30)
        if release:
            services.station_release(station_id=station_id, runner=self.name)

    def shutdown(self) -> None:
        """A clean stop hands every station back at once, so another runner need not wait for the lease."""
        started = time.monotonic()
        for worker in self.workers.values():
            worker.stop.set()
        for station_id, worker in list(self.workers.items()):
            worker.join(max(1.0, 30 - (time.monotonic() - started)))
            services.station_release(station_id=station_id, runner=self.name)
        self.workers.clear()
        log.info("station runner %s stopped", self.name)
