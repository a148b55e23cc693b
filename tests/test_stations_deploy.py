"""The station runner is started by `make run` (scripts/run_all.py) and has a compose service."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_compose_runs_the_station_runner_after_migrations():
    services = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())["services"]
    stations = services["stations"]
    assert stations["command"][:2] == ["manage", "run_stations"]
    # healthy while the runner's heartbeat keeps touching the file its health check reads
    alive_file = stations["command"][stations["command"].index("--alive-file") + 1]
    assert alive_file in " ".join(stations["healthcheck"]["test"])
    assert stations["depends_on"]["web"]["condition"] == "service_healthy"


def test_run_all_supervises_the_station_runner():
    source = (REPO / "scripts" / "run_all.py").read_text()
    assert 'Service("stations", [sys.executable, str(ROOT / "manage.py"), "run_stations"])' in source
