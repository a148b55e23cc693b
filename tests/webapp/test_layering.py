"""Layering: inference runs models and stores predictions; training depends on it (its evaluation stores test-split
predictions), never the other way round. A model version is training's row, so inference names it only in type
hints (under TYPE_CHECKING) and in a foreign key by its label."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import webapp.inference

INFERENCE = Path(webapp.inference.__file__).resolve().parent
ROOT = INFERENCE.parent.parent

PROBE = """
import importlib, pkgutil, sys
import django
django.setup()
import webapp.inference
loaded_by_setup = {m for m in sys.modules if m.startswith("webapp.training")}
names = [m.name for m in pkgutil.walk_packages(webapp.inference.__path__, "webapp.inference.")]
for name in names:
    importlib.import_module(name)
pulled_in = sorted(m for m in sys.modules if m.startswith("webapp.training") and m not in loaded_by_setup)
print(len(names), pulled_in)
"""


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks (type hints, never run)."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            guarded |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return guarded


def _training_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    guarded = _type_checking_blocks(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module]
        else:
            continue
        found += [f"{path.relative_to(ROOT)}:{node.lineno} {m}" for m in modules if m.startswith("webapp.training")]
    return found


def test_no_inference_module_imports_training_at_run_time():
    # given: every module of webapp/inference, its migrations included
    modules = sorted(INFERENCE.rglob("*.py"))
    assert len(modules) >= 8

    # when
    found = [line for path in modules for line in _training_imports(path)]

    # then
    assert found == []


def test_importing_all_of_inference_pulls_in_no_training_module():
    # given: a fresh interpreter, so that nothing pytest imported hides a module inference would pull in; Django's
    # set-up itself loads training's models (the app registry), which is what every app gets
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DJANGO_SETTINGS_MODULE": "tests.settings"}

    # when
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )

    # then
    assert result.returncode == 0, result.stderr
    count, pulled_in = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) >= 8
    assert pulled_in == "[]"
