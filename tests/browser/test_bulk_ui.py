"""A person labels a page of images at once: shift-click selects a range, "select all on this page" ticks the page,
"apply to all N" reaches every page of the filter, and Undo puts the previous labels back."""

from __future__ import annotations

import pytest

from tests.browser.conftest import log_in
from tests.webapp.test_bulk import make_images
from webapp.images.models import Image, Label, Split

pytestmark = pytest.mark.browser


def labels(project) -> dict[int, str]:
    return dict(Image.objects.filter(project=project).values_list("id", "label"))


def test_shift_click_select_page_all_pages_and_undo(page, live_server, transactional_db, owner, project):
    # given 65 unlabelled images (two pages of 60) and 2 good ones
    make_images(project, owner, 65)
    make_images(project, owner, 2, label=Label.GOOD, start=100)
    before = labels(project)
    log_in(page, live_server, "olivia")
    grid = f"{live_server.url}/projects/{project.public_id}/images/"
    page.goto(grid + "?label=unlabelled")
    page.wait_for_selector("html[data-grid-ready='1']")
    boxes = page.locator("#bulk input[name=image_ids]")
    assert boxes.count() == 60
    # when they click the 3rd box and shift-click the 7th
    boxes.nth(2).click()
    boxes.nth(6).click(modifiers=["Shift"])
    # then the five boxes from the 3rd to the 7th are ticked, and the count says so
    ticked = [i for i in range(60) if boxes.nth(i).is_checked()]
    assert ticked == [2, 3, 4, 5, 6]
    assert page.inner_text("#selected-count") == "5 selected"
    chosen = [int(boxes.nth(i).get_attribute("value")) for i in ticked]
    # when they mark the selection defect
    page.select_option("select[name=action]", "label_defect")
    page.click("#apply-selected")
    page.wait_for_selector("#bulk-undo")
    # then exactly those five changed, and the message says how many
    assert "Mark defect: 5 image(s) changed." in page.inner_text(".messages")
    after = labels(project)
    assert sorted(i for i in after if after[i] != before[i]) == sorted(chosen)
    # when they undo
    page.click("#bulk-undo button")
    page.wait_for_selector(".messages li.success:has-text('Undone')")
    # then every label is as before and the undo is no longer offered
    assert labels(project) == before
    assert page.locator("#bulk-undo").count() == 0
    # when they tick the whole page, then everything on it is selected
    page.check("#select-page")
    assert page.inner_text("#selected-count") == "60 selected"
    # and "apply to all" reaches all 65 unlabelled images on both pages, and only those
    page.select_option("select[name=action]", "split_test")
    assert page.inner_text("#apply-filter") == "Apply to all 65 matching this filter"
    page.click("#apply-filter")
    page.wait_for_selector("#bulk-undo")
    tested = Image.objects.filter(project=project, split=Split.TEST)
    assert tested.count() == 65 and not tested.filter(label=Label.GOOD).exists()


def test_selection_survives_the_grid_reloading_while_thumbnails_are_made(
    page, live_server, transactional_db, owner, project
):
    # given images whose thumbnails are still being made: the grid reloads itself every 2 s
    make_images(project, owner, 5)
    Image.objects.filter(project=project).update(thumbnail_state="pending")
    log_in(page, live_server, "olivia")
    page.goto(f"{live_server.url}/projects/{project.public_id}/images/")
    page.wait_for_selector("html[data-grid-ready='1']")
    boxes = page.locator("#bulk input[name=image_ids]")
    boxes.nth(0).click()
    boxes.nth(3).click(modifiers=["Shift"])
    # when the grid reloads
    with page.expect_response(lambda r: "/images/" in r.url and r.request.headers.get("hx-request") == "true"):
        pass
    page.wait_for_timeout(300)  # the swap settles
    # then the four ticks are still there, and a shift-click still extends from the last box
    assert [boxes.nth(i).is_checked() for i in range(5)] == [True, True, True, True, False]
    assert page.inner_text("#selected-count") == "4 selected"
    page.select_option("select[name=action]", "label_good")
    page.click("#apply-selected")
    page.wait_for_selector("#bulk-undo")
    assert Image.objects.filter(project=project, label=Label.GOOD).count() == 4
