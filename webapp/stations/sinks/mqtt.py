"""MQTT sink (paho-mqtt, QoS 1). A message counts as delivered once the broker acknowledged it (PUBACK).

Settings: ``host``, ``port`` (1883), ``topic`` (verdicts; default ``kensa/stations/<station id>/verdict``),
``status_topic`` (default ``kensa/stations/<station id>/status``), ``username``/``password`` (optional),
``client_id`` (default ``kensa-station-<id>-sink-<id>``).

Status: the runner publishes ``online`` retained on connect; the broker publishes the last will ``offline`` (also
retained) when the runner disappears without saying goodbye, and the runner publishes ``offline`` itself when it
stops cleanly. Payloads are the station's verdict JSON (docs/deploy.md describes every field).
"""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt

from webapp.stations.sinks.base import SinkError, SinkSettingsError

ACK_TIMEOUT_S = 5.0


class MqttSender:
    max_attempts = None  # a broker outage only delays delivery

    def __init__(self, settings: dict, *, station_id: int, sink_id: int):
        self.host = str(settings.get("host") or "").strip()
        if not self.host:
            raise SinkSettingsError("An MQTT sink needs the broker's host.")
        try:
            self.port = int(settings.get("port", 1883))
        except (TypeError, ValueError):
            raise SinkSettingsError("The MQTT port must be a number.") from None
        self.topic = settings.get("topic") or f"kensa/stations/{station_id}/verdict"
        self.status_topic = settings.get("status_topic") or f"kensa/stations/{station_id}/status"
        client_id = settings.get("client_id") or f"kensa-station-{station_id}-sink-{sink_id}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if settings.get("username"):
            self.client.username_pw_set(settings["username"], settings.get("password") or None)
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        self._connected = threading.Event()
        self._detail = f"connecting to {self.host}:{self.port}"
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._detail = f"broker refused: {reason_code}"
            return
        client.publish(self.status_topic, "online", qos=1, retain=True)
        self._connected.set()
        self._detail = f"connected to {self.host}:{self.port}"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._detail = f"disconnected from {self.host}:{self.port} ({reason_code}); reconnecting"

    def send(self, message) -> None:
        if not self._connected.wait(timeout=1.0):
            raise SinkError(f"broker {self.host}:{self.port} unreachable")
        info = self.client.publish(self.topic, json.dumps(message.payload, separators=(",", ":")), qos=1)
        try:
            info.wait_for_publish(timeout=ACK_TIMEOUT_S)
        except (RuntimeError, ValueError) as error:
            raise SinkError(f"publish failed: {error}") from None
        if not info.is_published():
            raise SinkError("no acknowledgement from the broker")

    def health(self) -> dict:
        state = "ok" if self._connected.is_set() else "retrying"
        return {"state": state, "detail": self._detail}

    def close(self) -> None:
        if self._connected.is_set():
            self.client.publish(self.status_topic, "offline", qos=1, retain=True).wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()
