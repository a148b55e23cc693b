#!/usr/bin/env bash
# Creates .venv with Python 3.11 (if missing) and installs a requirements file into it with pip.
#   scripts/install_venv.sh requirements.txt        what `make run` needs
#   scripts/install_venv.sh requirements-dev.txt    plus pytest, playwright, ruff (what `make test` needs)
# The Makefile calls this only when requirements*.txt changed since the last success (stamp files in .venv).
set -euo pipefail

cd "$(dirname "$0")/.."
req=${1:?usage: scripts/install_venv.sh REQUIREMENTS_FILE}
venv=${VENV:-.venv}
python=${PYTHON:-python3.11}
py=$venv/bin/python

if [[ ! -x $py ]]; then
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found; Kensa needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    echo "Creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi
if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: $venv has $("$py" --version 2>&1), Kensa needs Python 3.11; remove it with 'make clean-venv'" >&2
    exit 1
fi

# This machine's pip configuration (/etc/pip.conf, /etc/xdg/pip/pip.conf, PIP_FIND_LINKS=/opt/wheels) prefers a
# local CPU-only torch wheel (2.13.0+cpu) that has no torchvision partner; beside the index's torchvision 0.28.0,
# `import torchvision` (and so timm) fails. Ignoring that configuration makes pip take torch and torchvision from
# the package index as the pair pinned in requirements.txt. PIP_CERT and the other PIP_* variables still apply.
pip=(env PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$py" -m pip)
[[ -t 1 ]] || export PIP_PROGRESS_BAR=off  # CI logs: no progress bars

# The pip that `python -m venv` bundles can be years old; a current one reads the newest wheel metadata.
"${pip[@]}" install -q "pip>=24.2"

# A torch with a local build label (+cpu) next to a torchvision without the same label is the broken mix above,
# left by an earlier install; `torch==2.13.0` counts as satisfied by it, so pip alone would keep it.
mixed=$("$py" - <<'PY'
from importlib.metadata import PackageNotFoundError, version

def local_label(name):
    try:
        v = version(name)
    except PackageNotFoundError:
        return None
    return v.partition("+")[2]

torch, vision = local_label("torch"), local_label("torchvision")
print("yes" if torch and torch != vision else "no")
PY
)
if [[ $mixed == yes ]]; then
    echo "Replacing a local-build torch that has no matching torchvision with the package index's pair"
    "${pip[@]}" uninstall -y -q torch torchvision
fi

# Already-installed lines are dropped: on a small requirements change they would bury what changed.
"${pip[@]}" install -r "$req" | { grep -v "^Requirement already satisfied" || true; }

if ! HF_HUB_OFFLINE=1 "$py" -c 'import timm, torchvision, segmentation_models_pytorch' >/dev/null; then
    echo >&2
    echo "error: the virtualenv $venv cannot import timm, torchvision and segmentation_models_pytorch." >&2
    echo "Installed:" >&2
    "${pip[@]}" list 2>/dev/null | grep -iE '^(torch|torchvision|timm|segmentation.models.pytorch) ' >&2 || true
    echo "torch and torchvision must be the pair pinned in requirements.txt, both from the package index." >&2
    echo "Start over with: make clean-venv && make venv" >&2
    exit 1
fi
