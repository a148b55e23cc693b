"""Triggers for cameras in trigger mode (``"mode": "trigger"``): one frame per part in front of the camera.

Two ways in, both started by the runner beside the station when its source has a ``trigger()``:
- HTTP: ``POST /projects/<project>/stations/<station>/trigger/`` with an API token of the project (predict scope)
  increments the station's trigger count in the database; a watcher in the runner polls it every 50 ms.
- MQTT: source setting ``"trigger_mqtt": {"host": "plc-broker", "port": 1883, "topic": "line3/part-present"}``;
  every message on the topic is one trigger.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections, connection

from webapp.stations import services

log = logging.getLogger(__name__)

POLL_S = 0.05
MAX_BURST = 8  # triggers released at once after a gap; more than that were for parts already gone


class DatabaseTriggerWatcher(threading.Thread):
    def __init__(self, *, station_id: int, source, stop: threading.Event):
        super().__init__(name=f"station-{station_id}-triggers", daemon=True)
        self.station_id = station_id
        self.source = source
        self.stop = stop

    def run(self) -> None:
        try:
            seen = services.station_trigger_count(station_id=self.station_id)
            while not self.stop.wait(POLL_S):
                try:
                    count = services.station_trigger_count(station_id=self.station_id)
                except Exception:  # noqa: BLE001 - the database restarting; triggers resume with it
                    log.exception("station %s: reading triggers failed", self.station_id)
                    close_old_connections()
                    continue
                for _ in range(min(MAX_BURST, max(0, count - seen))):
                    self.source.trigger()
                seen = count
        finally:
            connection.close()


class MqttTriggerListener:
    def __init__(self, *, station_id: int, source, settings: dict):
        import paho.mqtt.client as mqtt

        self.topic = str(settings.get("topic") or f"kensa/stations/{station_id}/trigger")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"kensa-station-{station_id}-trigger")
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        self.client.on_connect = lambda client, *_: client.subscribe(self.topic, qos=1)
        self.client.on_message = lambda *_: source.trigger()
        self.client.connect_async(str(settings.get("host") or "127.0.0.1"), int(settings.get("port", 1883)))
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
