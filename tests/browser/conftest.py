import pytest

from tests.webapp.conftest import make_user, outsider, owner, project  # noqa: F401  (shared fixtures)


@pytest.fixture(autouse=True)
def _use_test_broker(broker, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def log_in(page, live_server, username: str, password: str = "pw-for-tests-1") -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
