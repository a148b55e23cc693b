"""The HTTP API: token auth and scopes, single and batch predictions end to end, and the OpenAPI schema."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re

import numpy as np
import pytest
from django.db import connection
from django.urls import URLPattern, URLResolver, reverse
from PIL import Image as PILImage

from ml.synthetic import make_image
from tests.conftest import wait_for
from tests.webapp.conftest import encode, png_bytes
from webapp.api import services
from webapp.api.decorators import error_response
from webapp.api.models import ApiToken, BatchJob, JobStatus, Scope
from webapp.api.openapi import openapi_schema
from webapp.api.urls import api_urlpatterns
from webapp.images.intake.decoding import NOT_AN_IMAGE
from webapp.inference.models import Prediction, Purpose
from webapp.inference.services import NO_ACTIVE_MODEL, version_calibration
from webapp.projects.services import project_create


def make_token(project, owner, scopes=(Scope.PREDICT, Scope.READ)) -> str:
    return services.api_token_create(project=project, name="line 3", scopes=scopes, created_by=owner)[1]


def auth(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def versions_url(project) -> str:
    return reverse("api_versions", kwargs={"project_id": project.public_id})


def predict_url(project) -> str:
    return reverse("api_predict", kwargs={"project_id": project.public_id})


def error_message(response) -> str:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]["message"]


# --- tokens and auth -------------------------------------------------------------------------------------------


def test_tokens_are_stored_hashed(project, owner):
    token, secret = services.api_token_create(project=project, name="cam", scopes=["predict"], created_by=owner)
    assert secret.startswith(f"kensa_{token.key_id}_") and len(secret) > 40
    # then the secret is nowhere in the database, only its SHA-256
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM api_apitoken")
        rows = cursor.fetchall()
    assert secret not in repr(rows)
    assert ApiToken.objects.get().secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()


def test_token_needs_a_name_and_a_known_scope(project, owner):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="Give the token a name"):
        services.api_token_create(project=project, name=" ", scopes=["read"], created_by=owner)
    with pytest.raises(ValidationError, match="at least one scope"):
        services.api_token_create(project=project, name="x", scopes=["admin"], created_by=owner)


def test_no_token_is_401_json_not_a_login_redirect(client, project):
    response = client.get(versions_url(project))
    assert response.status_code == 401
    assert error_message(response) == services.MISSING_TOKEN
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer nonsense", "Bearer kensa_000000000000_abc", "Basic dXNlcjpwdw=="])
def test_bad_token_is_401(client, project, owner, header):
    secret = make_token(project, owner)
    response = client.get(versions_url(project), HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    # a real key id with a wrong secret is refused too
    tampered = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    assert client.get(versions_url(project), **auth(tampered)).status_code == 401


def test_revoked_token_is_401(client, project, owner):
    secret = make_token(project, owner)
    assert client.get(versions_url(project), **auth(secret)).status_code == 200
    services.api_token_revoke(token=ApiToken.objects.get())
    response = client.get(versions_url(project), **auth(secret))
    assert response.status_code == 401
    assert error_message(response) == services.INVALID_TOKEN


def test_a_token_works_only_for_its_own_project(client, project, owner):
    other = project_create(name="Other", owner=owner)
    other_secret = make_token(other, owner)
    response = client.get(versions_url(project), **auth(other_secret))
    assert response.status_code == 404
    assert error_message(response) == services.NO_SUCH_PROJECT
    assert (
        client.post(predict_url(project), {"image": io.BytesIO(png_bytes())}, **auth(other_secret)).status_code == 404
    )


def test_wrong_scope_is_403(client, project, owner):
    read_only = make_token(project, owner, scopes=[Scope.READ])
    response = client.post(predict_url(project), {"image": io.BytesIO(png_bytes())}, **auth(read_only))
    assert response.status_code == 403
    assert error_message(response) == services.WRONG_SCOPE.format(scope="predict")
    predict_only = make_token(project, owner, scopes=[Scope.PREDICT])
    assert client.get(versions_url(project), **auth(predict_only)).status_code == 403
    assert client.get(reverse("api_projects"), **auth(predict_only)).status_code == 403


def test_last_used_is_recorded(client, project, owner):
    secret = make_token(project, owner)
    assert ApiToken.objects.get().last_used_at is None
    client.get(reverse("api_projects"), **auth(secret))
    assert ApiToken.objects.get().last_used_at is not None


def test_api_is_csrf_exempt(project, owner):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post(predict_url(project), {"image": io.BytesIO(png_bytes())}, **auth(make_token(project, owner)))
    assert response.status_code == 409  # got past CSRF to the rules: no model yet
    assert error_message(response) == NO_ACTIVE_MODEL


def test_projects_list_shows_only_the_tokens_project(client, project, owner):
    project_create(name="Other", owner=owner)
    body = client.get(reverse("api_projects"), **auth(make_token(project, owner))).json()
    assert [p["id"] for p in body["projects"]] == [str(project.public_id)]
    assert body["projects"][0]["active_version"] is None


# --- the token page --------------------------------------------------------------------------------------------


def test_owner_creates_and_revokes_a_token_on_the_page(client, project, owner):
    client.force_login(owner)
    url = reverse("api_tokens", kwargs={"project_id": project.public_id})
    page = client.post(url, {"name": "camera PC", "scopes": ["predict"]})
    assert page.status_code == 200
    secret = re.search(r"kensa_[0-9a-f]{12}_[\w-]+", page.content.decode()).group(0)
    assert page["Cache-Control"] == "no-store"
    # the secret is shown once: the list page afterwards does not hold it
    assert secret not in client.get(url).content.decode()
    token = ApiToken.objects.get()
    client.post(reverse("api_token_revoke", kwargs={"project_id": project.public_id, "token_id": token.id}))
    token.refresh_from_db()
    assert token.is_revoked


# --- predictions -----------------------------------------------------------------------------------------------


def test_too_large_image_is_413_with_the_limit(client, project, owner, settings):
    settings.KENSA_MAX_IMAGE_BYTES = 1000
    data = png_bytes(size=96)
    assert len(data) > 1000
    secret = make_token(project, owner)
    raw = client.post(predict_url(project), data, content_type="image/png", **auth(secret))
    assert raw.status_code == 413 and "limit of 1,000 bytes" in error_message(raw)
    multipart = client.post(predict_url(project), {"image": io.BytesIO(data)}, **auth(secret))
    assert multipart.status_code == 413 and "limit of 1,000 bytes" in error_message(multipart)


def test_predict_one_image_end_to_end(client, trained_version, owner):
    # given a part with a drawn defect, and the version that knows the project
    project = trained_version.project
    secret = make_token(project, owner, scopes=[Scope.PREDICT])
    part = make_image(4242, size=96, defect="stain")
    # when it is sent as a raw body
    response = client.post(
        predict_url(project) + "?include=maps&name=cam3.png", encode(part.image, "PNG"), "image/png", **auth(secret)
    )
    # then the call follows the version's threshold and the defect is boxed where it was drawn
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["threshold"] == pytest.approx(trained_version.threshold)
    assert body["is_anomalous"] is True and body["score"] >= body["threshold"]
    assert body["normalised_score"] == pytest.approx(version_calibration(trained_version).normalise(body["score"]))
    assert body["normalised_score"] >= 0.5
    assert body["model_version"]["number"] == trained_version.number and body["review"] is False
    assert body["boxes"], "a drawn defect gives at least one box"
    ys, xs = np.nonzero(part.mask)
    top = body["boxes"][0]
    assert top["x0"] <= xs.mean() < top["x1"] and top["y0"] <= ys.mean() < top["y1"]
    # the maps come inline on request, and from their URLs with the same token
    mask = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(body["mask_png_base64"]))))
    assert mask.shape == (96, 96) and mask.max() == 255
    fetched = client.get(body["anomaly_map"], **auth(secret))
    assert fetched.status_code == 200 and fetched["Content-Type"] == "image/png"
    assert base64.b64decode(body["anomaly_map_png_base64"]) == b"".join(fetched.streaming_content)
    row = Prediction.objects.get(id=body["prediction_id"])
    assert row.purpose == Purpose.API and row.input_name == "cam3.png"


def test_multipart_good_part_versions_and_a_bad_image(client, trained_version, owner):
    project = trained_version.project
    secret = make_token(project, owner)
    # a file that is not an image is a 400 with the intake's reason; no image at all says what to send
    response = client.post(predict_url(project), {"image": io.BytesIO(b"GIF89a not really")}, **auth(secret))
    assert response.status_code == 400
    assert error_message(response) == NOT_AN_IMAGE
    empty = client.post(predict_url(project), {}, **auth(secret))
    assert empty.status_code == 400 and error_message(empty) == services.NO_IMAGE
    # a good part over multipart follows the threshold too
    good = encode(make_image(4243, size=96).image, "PNG")
    body = client.post(predict_url(project), {"image": io.BytesIO(good)}, **auth(secret)).json()
    assert body["is_anomalous"] is (body["score"] >= trained_version.threshold)
    assert "anomaly_map_png_base64" not in body
    versions = client.get(versions_url(project), **auth(secret)).json()["versions"]
    assert versions[0]["is_active"] and versions[0]["threshold"] == pytest.approx(trained_version.threshold)
    assert versions[0]["metrics"]["image_auroc"] is not None


def test_no_active_model_is_409(client, project, owner):
    response = client.post(predict_url(project), {"image": io.BytesIO(png_bytes())}, **auth(make_token(project, owner)))
    assert response.status_code == 409 and error_message(response) == NO_ACTIVE_MODEL


@pytest.mark.integration
def test_batch_end_to_end_on_the_worker(client, trained_version, owner, celery_worker):
    # given two stained parts (the defect the small Gaussian model catches reliably), a good one and a non-image
    project = trained_version.project
    secret = make_token(project, owner)
    files = [encode(make_image(5000 + i, size=96, defect="stain" if i < 2 else None).image, "PNG") for i in range(3)]
    uploads = [io.BytesIO(f) for f in files] + [io.BytesIO(b"not an image")]
    for index, upload in enumerate(uploads):
        upload.name = f"part{index}.png"
    # when they are sent as a batch
    response = client.post(reverse("api_batch_create", kwargs={"project_id": project.public_id}), {"images": uploads},
                           **auth(secret))  # fmt: skip
    assert response.status_code == 202, response.content
    job_url = response["Location"]
    assert response.json()["status"] == JobStatus.QUEUED and response.json()["total"] == 4

    # then the worker predicts each image; the bad one is reported on its own result
    def ended():
        body = client.get(job_url, **auth(secret)).json()
        return body if body["status"] in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None

    body = wait_for(ended, timeout=60, message=f"the batch to end; worker log:\n{celery_worker.log_text()[-3000:]}")
    assert body["status"] == JobStatus.SUCCEEDED and body["done"] == 4 and body["progress"] == 1
    results = body["results"]
    assert [r["name"] for r in results] == ["part0.png", "part1.png", "part2.png", "part3.png"]
    assert results[3]["prediction"] is None and results[3]["error"] == NOT_AN_IMAGE
    for result in results[:3]:
        prediction = result["prediction"]
        assert prediction["is_anomalous"] == (prediction["score"] >= trained_version.threshold)
        assert prediction["threshold"] == pytest.approx(trained_version.threshold)
    assert results[0]["prediction"]["is_anomalous"] and results[0]["prediction"]["boxes"]
    job = BatchJob.objects.get(public_id=body["id"])
    assert Prediction.objects.filter(purpose=Purpose.BATCH, batch_item__job=job).count() == 3
    assert all(item.staged_file == "" for item in job.items.all())


def test_unknown_batch_job_is_404(client, project, owner):
    import uuid

    secret = make_token(project, owner)
    url = reverse("api_batch_detail", kwargs={"project_id": project.public_id, "job_id": uuid.uuid4()})
    response = client.get(url, **auth(secret))
    assert response.status_code == 404 and error_message(response) == services.NO_SUCH_JOB


# --- the OpenAPI schema and docs -------------------------------------------------------------------------------


def _openapi_path(route: str) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_openapi_covers_every_api_route_and_method(client):
    response = client.get(reverse("api_openapi"))
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.1") and {"info", "paths", "components", "servers"} <= schema.keys()
    assert schema["servers"][0]["url"].endswith("/api/v1")
    routes = {}
    for pattern in api_urlpatterns:
        assert isinstance(pattern, URLPattern) and not isinstance(pattern, URLResolver)
        routes[_openapi_path(str(pattern.pattern))] = getattr(pattern.callback, "api_methods", ("GET",))
    assert set(routes) == set(schema["paths"])
    for path, methods in routes.items():
        assert {m.lower() for m in methods} == set(schema["paths"][path]), path
        for method, operation in schema["paths"][path].items():
            assert operation["operationId"] and operation["responses"], (path, method)
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path


def test_openapi_refs_resolve():
    schema = openapi_schema(server_url="http://x/api/v1")
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(schema)))
    assert refs and refs <= set(schema["components"]["schemas"])


def test_every_api_url_is_under_api_v1():
    for pattern in api_urlpatterns:
        assert reverse(pattern.name, kwargs=_dummy_kwargs(str(pattern.pattern))).startswith("/api/v1/")


def _dummy_kwargs(route: str) -> dict:
    values = {"uuid": "00000000-0000-0000-0000-000000000000", "int": 1}
    return {name: values[conv] for conv, name in re.findall(r"<(\w+):(\w+)>", route)}


def test_docs_page_shows_every_operation_with_curl(client, project, member_with):
    from webapp.projects.models import Role

    client.force_login(member_with(Role.VIEWER))
    page = client.get(reverse("api_docs", kwargs={"project_id": project.public_id})).content.decode()
    for path in openapi_schema(server_url="")["paths"]:
        assert path in page
    assert f"/api/v1/projects/{project.public_id}/predict/" in page and "curl -X POST" in page
    assert "urllib.request" in page


def test_error_response_shape():
    from webapp.api.errors import ApiError

    response = error_response(ApiError(409, "no_active_model", NO_ACTIVE_MODEL))
    assert json.loads(response.content) == {"error": {"code": "no_active_model", "message": NO_ACTIVE_MODEL}}
