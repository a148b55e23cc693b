"""manage.py run_stations: the long-lived station runner (see webapp/stations/runner.py). Stops cleanly on
SIGTERM or Ctrl-C, handing its stations back."""

from __future__ import annotations

import logging
import signal
import threading

from django.core.management.base import BaseCommand

from webapp.env import env_int
from webapp.stations.runner import Runner


class Command(BaseCommand):
    help = "Run inspection stations: claim them with a lease, judge their images, deliver verdicts to their sinks."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--name", default="", help="runner name shown on Station pages (host:pid by default)")
        parser.add_argument(
            "--lease",
            type=float,
            default=env_int("KENSA_STATION_LEASE_SECONDS", 30),
            help="seconds a claim lasts without a heartbeat (KENSA_STATION_LEASE_SECONDS, 30)",
        )
        parser.add_argument("--max-stations", type=int, default=None, help="take at most this many stations")
        parser.add_argument(
            "--alive-file", default="", help="a file touched on every heartbeat, for a container health check"
        )
        parser.add_argument(
            "--keep-images",
            type=int,
            default=env_int("KENSA_STATION_KEEP_IMAGES", 1000),
            help="images (input, heatmap, mask) kept per station; older ones are deleted, their verdicts kept",
        )

    def handle(
        self, *args, name: str, lease: float, max_stations: int | None, keep_images: int, alive_file: str, **options
    ) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        stop = threading.Event()
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: stop.set())
        runner = Runner(
            name=name or None,
            lease_seconds=lease,
            max_stations=max_stations,
            keep_images=keep_images,
            alive_file=alive_file,
        )
        self.stdout.write(f"station runner {runner.name} ready", ending="\n")
        self.stdout.flush()
        runner.run(stop)
