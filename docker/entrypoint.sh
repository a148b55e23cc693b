#!/usr/bin/env bash
# Container entry point. The first argument picks the role:
#   web [SERVER_ARGS...]              migrate, make sure an admin exists, then the web server (webapp/server.py,
#                                     waitress) on 0.0.0.0:8000
#   worker QUEUES [CELERY_ARGS...]    a Celery worker for QUEUES (comma-separated: default, train)
#   beat                              Celery beat (periodic tasks), schedule kept in /data
#   manage ARGS...                    python manage.py ARGS (import_folder, createsuperuser, ...)
#   anything else                     run as given
set -euo pipefail
cd /app

# The secret key: when KENSA_SECRET_KEY_FILE names a missing file, make one there, once. compose.yaml points it
# at the shared /data volume, so web and workers read the same key.
if [[ -n ${KENSA_SECRET_KEY_FILE:-} && ! -s $KENSA_SECRET_KEY_FILE ]]; then
    tmp=$(mktemp "$(dirname "$KENSA_SECRET_KEY_FILE")/.secret_key.XXXXXX")  # mode 600
    python -c 'import secrets; print(secrets.token_urlsafe(50))' >"$tmp"
    # `ln` fails when the file exists: if two containers start together, the first one's key wins.
    ln "$tmp" "$KENSA_SECRET_KEY_FILE" 2>/dev/null || true
    rm -f "$tmp"
fi
if [[ -n ${KENSA_SECRET_KEY_FILE:-} && -n ${KENSA_SECRET_KEY:-} ]]; then
    echo "entrypoint: both KENSA_SECRET_KEY and KENSA_SECRET_KEY_FILE are set; the file wins" >&2
fi

role=${1:-web}
if [[ $# -gt 0 ]]; then shift; fi
case "$role" in
    web)
        python manage.py migrate --noinput
        if ! python manage.py ensure_admin; then
            echo "entrypoint: no administrator yet. Set KENSA_ADMIN_USERNAME and KENSA_ADMIN_PASSWORD, or run" >&2
            echo "  docker compose -f docker/compose.yaml exec web python manage.py ensure_admin" >&2
        fi
        # The same server as `make run`: whole requests are read before a thread takes one (slow clients).
        exec python -m webapp.server --bind 0.0.0.0:8000 "$@"
        ;;
    worker)
        queues=${1:?usage: worker QUEUES [CELERY_ARGS...]}
        shift
        exec celery -A workers worker -Q "$queues" -n "${queues//,/+}@%h" --prefetch-multiplier 1 -l info "$@"
        ;;
    beat)
        exec celery -A workers beat -l info -s "${KENSA_DATA_DIR:-/data}/celerybeat-schedule" "$@"
        ;;
    manage)
        exec python manage.py "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
