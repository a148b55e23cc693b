"""The Celery app, configured from Django settings (keys prefixed CELERY_)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = Celery("kensa", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = ("workers.decorators.route_task",)
