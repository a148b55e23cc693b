#!/usr/bin/env bash
# manage.py with the environment `make run` uses (.env, var/secret_key, HF_HUB_OFFLINE=1), for example:
#   scripts/manage.sh import_folder --project "Bottle caps" /data/caps
#   scripts/manage.sh createsuperuser
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ ! -x $root/.venv/bin/python ]]; then
    echo "error: $root/.venv is missing; run 'make venv-run' (or 'make run') first" >&2
    exit 1
fi
exec "$root/.venv/bin/python" "$root/scripts/run_all.py" manage "$@"
