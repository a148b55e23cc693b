import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_bool, env_int, env_str
from workers.decorators import TASK_QUEUES, route_task


def test_strict_booleans(monkeypatch):
    monkeypatch.setenv("KENSA_X", "yes")
    assert env_bool("KENSA_X", False) is True
    monkeypatch.setenv("KENSA_X", "off")
    assert env_bool("KENSA_X", True) is False
    monkeypatch.setenv("KENSA_X", "maybe")
    with pytest.raises(ImproperlyConfigured, match="not a boolean"):
        env_bool("KENSA_X", False)
    monkeypatch.setenv("KENSA_N", "12x")
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env_int("KENSA_N", 1)


def test_secrets_from_files(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("KENSA_SECRET_KEY_FILE", str(secret))
    assert env_str("KENSA_SECRET_KEY") == "s3cret"


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KENSA_")}
    env["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "KENSA_SECRET_KEY" in result.stderr


def test_every_scheduled_task_is_registered_from_its_apps_tasks_module(settings):
    from workers.celery import app

    app.loader.import_default_modules()  # what a worker does at start: every webapp/<app>/tasks.py it includes
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks
    assert {"training.run", "robustness.run", "robustness.reap", "api.batch_run"} <= set(app.tasks)
    assert app.tasks["robustness.reap"].__module__ == "webapp.robustness.tasks"


def test_tasks_are_routed_to_their_queues():
    from workers.celery import app

    app.loader.import_default_modules()
    assert TASK_QUEUES["training.run"] == "train"
    assert TASK_QUEUES["images.thumbnails_make"] == "default"
    assert route_task("training.run", (), {}, {}) == {"queue": "train"}
    assert route_task("something.else", (), {}, {}) is None


@pytest.mark.parametrize("behind_proxy, expected", [("true", "True"), ("false", "False")])
def test_a_form_posted_over_https_through_a_tls_proxy_passes_csrf_only_when_the_proxy_is_trusted(
    behind_proxy, expected, tmp_path
):
    # The browser sends Origin https://...; gunicorn sees plain HTTP from the proxy. Without trusting
    # X-Forwarded-Proto, Django's CSRF origin check refuses every form post.
    script = """
import django
from django.conf import settings
django.setup()
from django.middleware.csrf import CsrfViewMiddleware
from django.test import RequestFactory
request = RequestFactory().post(
    "/", HTTP_HOST="kensa.example", HTTP_ORIGIN="https://kensa.example", HTTP_X_FORWARDED_PROTO="https"
)
print(CsrfViewMiddleware(lambda r: None)._origin_verified(request))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KENSA_")}
    env |= {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "KENSA_SECRET_KEY": "x" * 50,
        "KENSA_DATA_DIR": str(tmp_path),
        "KENSA_ALLOWED_HOSTS": "kensa.example",
        "KENSA_BEHIND_TLS_PROXY": behind_proxy,
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
