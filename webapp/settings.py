"""Kensa settings. Every value comes from the environment; `.env.example` lists them all with their defaults."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("KENSA_DEBUG", False)
SECRET_KEY = env_str("KENSA_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("KENSA_SECRET_KEY (or KENSA_SECRET_KEY_FILE) must be set when KENSA_DEBUG is off")
    SECRET_KEY = "insecure-development-key"

ALLOWED_HOSTS = env_list("KENSA_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("KENSA_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "webapp.accounts",
    "webapp.projects",
    "webapp.images",
    "webapp.training",
    "webapp.inference",
    "webapp.dashboard",
    "webapp.api",
    "webapp.annotations",
    "webapp.review",
    "webapp.audit",
    "webapp.stations",
    "webapp.robustness",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every page needs a login unless its view is marked @login_not_required.
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite in WAL mode is the embedded default: the web process and a local worker share it safely.
# DATABASE_URL (for example postgres://user:pass@host:5432/kensa) switches to PostgreSQL for a fleet of workers.
DATA_DIR = Path(env_str("KENSA_DATA_DIR", str(BASE_DIR / "var")))
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'kensa.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("KENSA_DB_CONN_MAX_AGE", 0))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("KENSA_TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "webapp" / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("KENSA_MEDIA_ROOT", str(BASE_DIR / "media")))


def s3_storage(
    *, bucket: str, endpoint_url: str = "", access_key: str = "", secret_key: str = "", region: str = ""
) -> dict:
    """The STORAGES["default"] entry for an S3-compatible bucket; the S3 tests build theirs with it too."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url or None,
            "access_key": access_key,
            "secret_key": secret_key,
            "region_name": region or None,
            "default_acl": None,
            "file_overwrite": False,
        },
    }


# Local folder by default; "s3" stores originals, masks and model artifacts in an S3-compatible bucket.
STORAGE_BACKEND = env_str("KENSA_STORAGE", "local")
if STORAGE_BACKEND == "local":
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
elif STORAGE_BACKEND == "s3":
    if not env_str("KENSA_S3_BUCKET"):
        raise ImproperlyConfigured("KENSA_STORAGE=s3 needs KENSA_S3_BUCKET")
    _default_storage = s3_storage(
        bucket=env_str("KENSA_S3_BUCKET"),
        endpoint_url=env_str("KENSA_S3_ENDPOINT_URL"),
        access_key=env_str("KENSA_S3_ACCESS_KEY_ID"),
        secret_key=env_str("KENSA_S3_SECRET_ACCESS_KEY"),
        region=env_str("KENSA_S3_REGION"),
    )
else:
    raise ImproperlyConfigured(f"KENSA_STORAGE={STORAGE_BACKEND!r}: expected 'local' or 's3'")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# Uploads: many files per request and large archives; images are checked one by one by the intake service.
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("KENSA_MAX_FILES_PER_UPLOAD", 1000)
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
KENSA_MAX_IMAGE_PIXELS = env_int("KENSA_MAX_IMAGE_PIXELS", 64_000_000)
KENSA_MAX_IMAGE_BYTES = env_int("KENSA_MAX_IMAGE_BYTES", 100 * 1024 * 1024)
# Training starts a robustness run by itself for test splits up to this many images (0: only by the button).
KENSA_ROBUSTNESS_AUTO_MAX_TEST_IMAGES = env_int("KENSA_ROBUSTNESS_AUTO_MAX_TEST_IMAGES", 150)
# Pixels x bytes per pixel as decoded (RGB and RGBA: 4): what one image may take in memory while it is checked.
KENSA_MAX_DECODED_BYTES = env_int("KENSA_MAX_DECODED_BYTES", 256 * 1024 * 1024)
KENSA_MAX_ARCHIVE_BYTES = env_int("KENSA_MAX_ARCHIVE_BYTES", 4 * 1024 * 1024 * 1024)
KENSA_MAX_ARCHIVE_MEMBERS = env_int("KENSA_MAX_ARCHIVE_MEMBERS", 20_000)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("KENSA_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# HSTS: browsers that saw it refuse plain HTTP to this host for that many seconds. Set it only once the site is
# served over HTTPS for good (a proxy in front, KENSA_BEHIND_TLS_PROXY or TLS on this server): 0 sends nothing.
SECURE_HSTS_SECONDS = env_int("KENSA_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = False  # other hosts of the plant's domain may still need plain HTTP
# Behind a TLS-terminating proxy (nginx, Caddy, a load balancer) that sets X-Forwarded-Proto: the request counts as
# HTTPS, so CSRF's origin check and absolute URLs use https. Only when the proxy overwrites that header itself.
if env_bool("KENSA_BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Celery on Redis. No result backend: progress and results live on database rows.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# The cache every web process shares: the sign-in throttle counts failed passwords there (webapp.accounts.throttle).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "kensa",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message not acknowledged within this many seconds is redelivered: longer than any task's hard time limit,
# so a long task is never run twice while still alive.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("KENSA_VISIBILITY_TIMEOUT", 6 * 3600)}
CELERY_TASK_ALWAYS_EAGER = False


# Where models compute (ml.devices: auto, cpu, cuda, cuda:N). KENSA_DEVICE is the training worker's (auto: its GPU
# when torch sees one); KENSA_PREDICT_DEVICE is for predictions in the web server and default workers, CPU unless
# told: they run beside training and each web process keeps its own models (docs/deploy.md, "GPU workers").
def _device_spec(name: str, value: str) -> str:
    from ml.devices import check_device_spec

    try:
        return check_device_spec(value)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}: {error}") from None


KENSA_DEVICE = _device_spec("KENSA_DEVICE", env_str("KENSA_DEVICE", "auto"))
KENSA_PREDICT_DEVICE = _device_spec("KENSA_PREDICT_DEVICE", env_str("KENSA_PREDICT_DEVICE", "cpu"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("KENSA_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
# Every 30 s, so the bounds promised in docs/deploy.md hold: a check's threshold plus its period (see each reaper).
CELERY_BEAT_SCHEDULE = {
    "reap-stale-training-runs": {"task": "training.reap", "schedule": 30.0},
    "reap-stale-robustness-runs": {"task": "robustness.reap", "schedule": 30.0},
    "reap-stale-batch-jobs": {"task": "api.batch_reap", "schedule": 30.0},
    "requeue-stale-thumbnails": {"task": "images.thumbnails_requeue", "schedule": 30.0},
}
# Routine predictions (API, trial, batch) expire by age (days) and by count (newest kept per project); 0 turns a
# limit off. Test-split and reviewed predictions are always kept. See webapp/inference/retention.py.
PREDICTION_RETENTION = {
    "api": {"days": env_int("KENSA_RETAIN_API_DAYS", 7), "count": env_int("KENSA_RETAIN_API_COUNT", 100_000)},
    "batch": {"days": env_int("KENSA_RETAIN_BATCH_DAYS", 7), "count": env_int("KENSA_RETAIN_BATCH_COUNT", 100_000)},
    "trial": {"days": env_int("KENSA_RETAIN_TRIAL_DAYS", 30), "count": env_int("KENSA_RETAIN_TRIAL_COUNT", 10_000)},
}
CELERY_BEAT_SCHEDULE["expire-routine-predictions"] = {
    "task": "inference.predictions_cleanup",
    "schedule": float(env_int("KENSA_RETENTION_INTERVAL_S", 600)),
}
