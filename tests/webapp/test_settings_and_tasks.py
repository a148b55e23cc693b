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


def test_tasks_are_routed_to_their_queues():
    assert TASK_QUEUES["training.run"] == "train"
    assert TASK_QUEUES["images.thumbnails_make"] == "default"
    assert route_task("training.run", (), {}, {}) == {"queue": "train"}
    assert route_task("something.else", (), {}, {}) is None
