"""Modbus TCP sink: a Modbus TCP server inside the runner that a PLC polls (pymodbus).

Settings: ``port`` (5020; 502 needs root), ``host`` ("0.0.0.0"), ``unit`` (1; any unit id answers).

Holding registers (function 3, zero-based addresses), all unsigned 16 bit; 32-bit counters are high word first:

    0      last verdict: 0 none yet, 1 OK, 2 NG, 3 REVIEW
    1      sequence: +1 (mod 65536) with every verdict, so a PLC sees a new part even when the verdict repeats
    2-3    OK count        4-5   NG count        6-7   REVIEW count
    8      heartbeat: +1 (mod 65536) every second while the runner is alive; a PLC alarms when it stops moving
    9      last score x 1000 (normalised: 500 is the threshold)
    10     last latency in ms (arrival to verdict), capped at 65535

The registers are written when the outbox delivers the verdict, so a PLC sees verdicts in order, once each.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import ModbusTcpServer

from webapp.stations.sinks.base import SinkError, SinkSettingsError

VERDICT_CODES = {"ok": 1, "ng": 2, "review": 3}
REG_VERDICT, REG_SEQUENCE, REG_OK, REG_NG, REG_REVIEW, REG_HEARTBEAT, REG_SCORE, REG_LATENCY = 0, 1, 2, 4, 6, 8, 9, 10
REGISTER_COUNT = 16
HOLDING = 3  # the function code pymodbus's context uses for holding registers


def _words32(value: int) -> list[int]:
    value = int(value) & 0xFFFFFFFF
    return [value >> 16, value & 0xFFFF]


class ModbusSender:
    max_attempts = 3

    def __init__(self, settings: dict):
        try:
            self.port = int(settings.get("port", 5020))
        except (TypeError, ValueError):
            raise SinkSettingsError("The Modbus port must be a number.") from None
        if not 1 <= self.port <= 65535:
            raise SinkSettingsError("The Modbus port must be between 1 and 65535.")
        self.host = str(settings.get("host") or "0.0.0.0")
        block = ModbusSequentialDataBlock(0, [0] * (REGISTER_COUNT + 1))
        self.store = ModbusSlaveContext(hr=block)
        self.context = ModbusServerContext(slaves=self.store, single=True)
        self._lock = threading.Lock()
        self._sequence = 0
        self._stop = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._error = ""
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"modbus-{self.port}", daemon=True)
        self._thread.start()
        self._started.wait(5)
        self._heartbeat = threading.Thread(target=self._beat, name=f"modbus-beat-{self.port}", daemon=True)
        self._heartbeat.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen_and_serve())

    async def _listen_and_serve(self) -> None:
        try:
            self._server = ModbusTcpServer(self.context, address=(self.host, self.port))
            listening = await self._server.listen()
        except Exception as error:  # noqa: BLE001 - anything here means no PLC can reach us; say so on the page
            self._error, listening = f"cannot serve on {self.host}:{self.port}: {error}", False
        if not listening:
            self._error = self._error or f"cannot listen on {self.host}:{self.port} (port in use?)"
            self._started.set()
            return
        self._started.set()
        await self._server.serving

    def _write(self, address: int, values: list[int]) -> None:
        with self._lock:
            self.store.setValues(HOLDING, address, values)

    def read(self, address: int, count: int = 1) -> list[int]:
        with self._lock:
            return list(self.store.getValues(HOLDING, address, count))

    def _beat(self) -> None:
        beat = 0
        while not self._stop.wait(1.0):
            beat = (beat + 1) & 0xFFFF
            self._write(REG_HEARTBEAT, [beat])

    def send(self, message) -> None:
        if self._error:
            raise SinkError(self._error)
        payload = message.payload
        counters = payload.get("counters") or {}
        self._sequence = (self._sequence + 1) & 0xFFFF
        score = max(0, min(65535, round(float(payload.get("score") or 0) * 1000)))
        latency = max(0, min(65535, round(float(payload.get("latency_ms") or 0))))
        self._write(REG_OK, _words32(counters.get("ok", 0)) + _words32(counters.get("ng", 0)))
        self._write(REG_REVIEW, _words32(counters.get("review", 0)))
        self._write(REG_SCORE, [score, latency])
        # Verdict and sequence last and together: a PLC that sees the new sequence also sees its counters.
        self._write(REG_VERDICT, [VERDICT_CODES[payload["verdict"]], self._sequence])

    def health(self) -> dict:
        if self._error:
            return {"state": "error", "detail": self._error}
        return {"state": "ok", "detail": f"serving Modbus TCP on {self.host}:{self.port}"}

    def close(self) -> None:
        self._stop.set()
        if self._server is not None and self._loop.is_running():
            with contextlib.suppress(Exception):  # already stopping: nothing left to close
                asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._thread.join(5)
