"""Every page works under the Content-Security-Policy (webapp.security): no page, script or htmx swap makes the
browser refuse anything, and the scripts that pages depend on still run."""

import numpy as np
import pytest

from tests.browser.conftest import log_in
from tests.webapp.conftest import png_bytes
from webapp.annotations.services import LayerEdit, annotation_save
from webapp.images.intake.ingest import IncomingFile, images_ingest
from webapp.projects.services import defect_class_create

pytestmark = pytest.mark.browser

# Reported in the page itself, whichever way the browser words its console message.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push([e.violatedDirective, e.blockedURI || "inline", e.sourceFile, e.lineNumber].join(" "));
});
"""


def test_pages_raise_no_content_security_policy_violation(page, live_server, project, owner):
    owner.is_staff = owner.is_superuser = True
    owner.save()
    scratch = defect_class_create(project=project, name="scratch", colour="#ff0000")
    data = png_bytes(1, size=64)
    (image,) = [
        r.image for r in images_ingest(project=project, user=owner, files=[IncomingFile("a.png", lambda: data)]).results
    ]
    mask = np.zeros((64, 64), bool)
    mask[5:20, 5:30] = True
    annotation_save(
        image=image,
        user=owner,
        expected_version=0,
        label="defect",
        layers=[LayerEdit(scratch.id, mask, [[1, 1, 9, 9]])],
    )

    console = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(RECORD_VIOLATIONS)
    log_in(page, live_server, "olivia")
    p, i = f"/projects/{project.public_id}", f"/projects/{project.public_id}/images/{image.public_id}"
    paths = [
        "/", f"{p}/", f"{p}/settings/", f"{p}/images/", f"{i}/", f"{p}/images/upload/", f"{p}/datasets/",
        f"{p}/train/", f"{p}/model/", f"{p}/review/", "/accounts/users/", "/admin/", f"{i}/annotate/",
    ]  # fmt: skip
    seen = {}
    for path in paths:
        response = page.goto(live_server.url + path)
        assert response.status == 200, path
        assert response.headers["content-security-policy"].startswith("default-src 'self'"), path
        page.wait_for_load_state("load")
        seen[path] = page.evaluate("window.__csp")
    # the editor's script ran (it marks itself ready), and an htmx swap on the grid works
    page.wait_for_selector("#editor[data-ready='1']", state="attached")
    page.goto(f"{live_server.url}{p}/images/")
    with page.expect_response(lambda r: "/images/?" in r.url and "label=defect" in r.url):
        page.select_option("select[name=label]", "defect")
    page.wait_for_function("location.search.includes('label=defect')")
    seen["grid filter"] = page.evaluate("window.__csp")

    assert {path: found for path, found in seen.items() if found} == {}
    assert [text for text in console if "Content Security Policy" in text or "Refused to" in text] == []
    # the swatch of a class keeps its colour without a style attribute
    page.goto(f"{live_server.url}{p}/settings/")
    assert page.get_attribute("svg.swatch rect", "fill") == "#ff0000"
