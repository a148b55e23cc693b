"""The station runner is started by `make run` (scripts/run_all.py) and has a compose service."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_compose_runs_the_station_runner_after_migrations():
    services = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())["services"]
    stations = services["stations"]
    assert stations["command"] == ["manage", "run_stations"]
    assert stations["depends_on"]["web"]["condition"] == "service_healthy"


def test_run_all_supervises_the_station_runner():
    source = (REPO / "scripts" / "run_all.py").read_text()
    assert 'Service("stations", [sys.executable, str(ROOT / "manage.py"), "run_stations"])' in source
