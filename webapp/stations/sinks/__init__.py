"""Sinks by kind: ``sender_for`` builds the object that delivers a Sink row's outbox messages."""

from __future__ import annotations

from webapp.stations.sinks.base import SinkError, SinkSettingsError


def sender_for(kind: str, settings: dict, *, station_id: int, sink_id: int):
    """The sender for a sink (opens connections / listens; call close() when done)."""
    if kind == "mqtt":
        from webapp.stations.sinks.mqtt import MqttSender

        return MqttSender(settings, station_id=station_id, sink_id=sink_id)
    if kind == "webhook":
        from webapp.stations.sinks.webhook import WebhookSender

        return WebhookSender(settings)
    if kind == "folder":
        from webapp.stations.sinks.folder import FolderSender

        return FolderSender(settings)
    if kind == "modbus":
        from webapp.stations.sinks.modbus import ModbusSender

        return ModbusSender(settings)
    raise SinkSettingsError(f"unknown sink kind {kind!r}")


def sender_check(kind: str, settings: dict) -> None:
    """Checks a sink's settings without connecting or listening; raises SinkSettingsError."""
    if not isinstance(settings, dict):
        raise SinkSettingsError("Sink settings must be a JSON object.")
    if kind == "mqtt":
        if not str(settings.get("host") or "").strip():
            raise SinkSettingsError("An MQTT sink needs the broker's host.")
        _port(settings.get("port", 1883), "MQTT")
    elif kind == "webhook":
        from webapp.stations.sinks.webhook import WebhookSender

        WebhookSender(settings)
    elif kind == "folder":
        if not str(settings.get("path") or "").strip():
            raise SinkSettingsError("A folder sink needs a path.")
    elif kind == "modbus":
        _port(settings.get("port", 5020), "Modbus")
    else:
        raise SinkSettingsError(f"unknown sink kind {kind!r}")


def _port(value, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SinkSettingsError(f"The {what} port must be a number.") from None
    if not 1 <= port <= 65535:
        raise SinkSettingsError(f"The {what} port must be between 1 and 65535.")
    return port


__all__ = ["SinkError", "SinkSettingsError", "sender_check", "sender_for"]
