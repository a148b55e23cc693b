"""Test settings: the app's own settings with a throwaway secret, media in a temporary folder and a file-based
SQLite test database (a separate Celery worker process must see the same data).

KENSA_TEST_DATABASE_URL runs the suite against another database instead, e.g. PostgreSQL (`make test-postgres`);
DATABASE_URL is ignored here so that tests never touch the database a developer's shell points at."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("KENSA_SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
_scratch = Path(os.environ.setdefault("KENSA_TEST_SCRATCH", tempfile.mkdtemp(prefix="kensa-tests-")))
os.environ.setdefault("KENSA_MEDIA_ROOT", str(_scratch / "media"))
os.environ.setdefault("KENSA_DATA_DIR", str(_scratch / "data"))
# Training in tests starts no robustness run unless a test asks (a run on the train queue delays the next training).
os.environ.setdefault("KENSA_ROBUSTNESS_AUTO_MAX_TEST_IMAGES", "0")
os.environ["DATABASE_URL"] = os.environ.get("KENSA_TEST_DATABASE_URL") or f"sqlite:///{_scratch / 'kensa.sqlite3'}"

from webapp.settings import *  # noqa: E402,F403
from webapp.settings import DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(_scratch / "test.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
# The session's redis-server starts on a free port only once tests run: tests of the shared cache point CACHES at it
# (tests/webapp/test_hardening_small.py); every other test gets a per-process cache instead of no cache at all.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
# Static files come from the app folders (finders) in tests; an empty STATIC_ROOT keeps WhiteNoise from warning.
STATIC_ROOT = _scratch / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
