"""Measures the threshold slider's round trip: the metrics fragment request for a slider position (numbers,
confusion, histogram, PR and ROC curves) through Django's full middleware stack, on a version with 10,000 stored
test predictions.

    KENSA_DATA_DIR=$(mktemp -d) sh -c 'python manage.py migrate -v0 && python manage.py bench_slider'

Creates a throwaway user and project in the configured database and deletes them afterwards.
"""

from __future__ import annotations

import statistics
import time
import uuid

import numpy as np
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.test import Client
from django.urls import reverse

from webapp.dashboard.synthetic import scored_version_create
from webapp.projects.services import project_create


class Command(BaseCommand):
    help = "Times the dashboard's threshold fragment on 10,000 stored test predictions (p50 / p95)."

    def add_arguments(self, parser):
        parser.add_argument("--predictions", type=int, default=10_000)
        parser.add_argument("--requests", type=int, default=300)
        parser.add_argument("--warmup", type=int, default=10)

    def handle(self, *args, predictions: int, requests: int, warmup: int, **options):
        rng = np.random.default_rng(0)
        labels = rng.random(predictions) < 0.2
        scores = rng.normal(10, 2, predictions) + labels * rng.uniform(1, 8, predictions)
        user = User.objects.create_user(username=f"bench-{uuid.uuid4().hex[:8]}", password=uuid.uuid4().hex)
        project = project_create(name="bench: slider", owner=user)
        try:
            started = time.perf_counter()
            version = scored_version_create(
                project=project, scores=scores, labels=labels, threshold=float(np.percentile(scores, 80)), scale=1.0
            )
            self.stdout.write(f"created {predictions:,} test predictions in {time.perf_counter() - started:.1f} s")
            client = Client(HTTP_HOST="127.0.0.1")
            client.force_login(user)
            url = reverse("version_detail", kwargs={"project_id": project.public_id, "version_id": version.public_id})
            headers = {"HX-Request": "true", "HX-Target": "threshold-panel"}
            # What the slider sends: a position on the version's ladder (one per distinct score, plus the ends).
            positions = rng.integers(0, predictions + 1, warmup + requests)
            times = []
            for i, position in enumerate(positions):
                tick = time.perf_counter()
                response = client.get(url, {"pos": str(position)}, headers=headers)
                elapsed = time.perf_counter() - tick
                assert response.status_code == 200 and b"metric-precision" in response.content, response.status_code
                if i == 0:
                    first = elapsed * 1000  # loads the scored set into the per-process cache
                if i >= warmup:
                    times.append(elapsed * 1000)
            times.sort()
            p50 = statistics.median(times)
            p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
            self.stdout.write(
                f"slider fragment, {predictions:,} predictions, {requests} requests: "
                f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms, {len(response.content):,} bytes; "
                f"first request (cache miss) {first:.1f} ms"
            )
        finally:
            project.delete()
            user.delete()
