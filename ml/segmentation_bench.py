"""`python -m ml.segmentation_bench ARGS` is `python -m ml bench ARGS`, kept because docs/benchmarks.md records
commands in this form. The bench reports `mean_iou` itself for families that predict masks."""

import sys

from ml.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
