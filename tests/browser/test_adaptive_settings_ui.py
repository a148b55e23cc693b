"""The Train page in a browser: the settings PatchCore will choose from the data are said before training, and
Advanced overrides them (issue 21)."""

import pytest

from tests.browser.conftest import log_in
from webapp.images.models import Image, Split
from webapp.samples import sample_project_create
from webapp.training.models import TrainingRun

pytestmark = pytest.mark.browser


def test_read_the_chosen_settings_and_override_the_rotations(page, live_server, owner, transactional_db, broker):
    # given a project that trains one model (no validation images, so no comparison of candidates)
    project = sample_project_create(owner=owner, n_good=30, n_defect=9, size=64)
    Image.objects.filter(project=project, split=Split.VALIDATION).update(split=Split.TEST)
    log_in(page, live_server, "olivia")

    # when the owner opens the Train page
    page.goto(f"{live_server.url}/projects/{project.public_id}/train/")

    # then it says what the data will choose, before anything is trained
    sentence = page.inner_text("#planned-settings")
    assert "good images: Kensa works at 128 px" in sentence and "rotated copies" in sentence

    # when they ask for no rotated copies under Advanced and train
    page.click("summary:has-text('Advanced')")
    page.select_option("select[name=rotations]", "1")
    page.click("#train-button")

    # then the run carries their setting
    page.wait_for_url("**/runs/**")
    assert TrainingRun.objects.get(project=project).config["rotations"] == 1
