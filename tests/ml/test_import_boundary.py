import os
import subprocess
import sys
from pathlib import Path

import ml

FORBIDDEN = ("django", "celery", "webapp", "workers")

PROBE = """
import importlib, pkgutil, sys
import ml
names = [m.name for m in pkgutil.walk_packages(ml.__path__, "ml.")]
for name in names:
    importlib.import_module(name)
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print(len(names), forbidden)
"""


def test_ml_never_imports_the_web_app_or_workers():
    # given: a fresh interpreter, so nothing imported by pytest or its plugins leaks in
    code = PROBE.format(forbidden=set(FORBIDDEN))
    root = Path(ml.__file__).resolve().parent.parent

    # when
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120, env=env)

    # then
    assert result.returncode == 0, result.stderr
    count, forbidden = result.stdout.split(" ", 1)
    assert int(count) >= 10
    assert forbidden.strip() == "[]"
