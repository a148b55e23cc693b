"""The model bundle download: on the Model page (members, viewers included; strangers get 404) and in the API (a
read token of the project), its manifest, its caching, and the runner it ships scoring the app's own images as the
app stored them, for PatchCore, the Gaussian and the U-Net."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image as PILImage

from ml.bundle_runner import Bundle
from ml.synthetic import make_image
from tests.webapp.conftest import encode, make_user, png_bytes, trained_version  # noqa: F401  (fixture)
from webapp.api import services as api_services
from webapp.api.models import Scope
from webapp.dashboard import bundles
from webapp.dashboard.services import model_version_threshold_save
from webapp.inference.models import Prediction, Purpose
from webapp.inference.services import predict_bytes, version_calibration
from webapp.projects.models import Membership, Role
from webapp.projects.services import project_create
from webapp.storage import stored_file_read
from webapp.training.models import ModelVersion

TOLERANCE = 1e-4


def page_url(version) -> str:
    return reverse("version_bundle", kwargs={"project_id": version.project.public_id, "version_id": version.public_id})


def api_url(version, project=None) -> str:
    project = project or version.project
    return reverse("api_version_bundle", kwargs={"project_id": project.public_id, "version_id": version.public_id})


def bearer(project, user, scopes=(Scope.READ,)) -> dict:
    secret = api_services.api_token_create(project=project, name="line 3", scopes=list(scopes), created_by=user)[1]
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def unpacked(response) -> dict[str, bytes]:
    """The zip's files by name inside its one top folder."""
    data = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        tops = {name.split("/", 1)[0] for name in archive.namelist()}
        assert len(tops) == 1
        return {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}


def test_owner_downloads_the_bundle_from_the_model_page(client, trained_version):  # noqa: F811
    # given
    version = trained_version
    client.force_login(version.project.memberships.get(role=Role.OWNER).user)

    # when
    page = client.get(reverse("version_detail", args=[version.project.public_id, version.public_id]))
    response = client.get(page_url(version))

    # then: the page links to it, and the zip holds the model and what the app knows about it
    assert page_url(version) in page.content.decode()
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert f'filename="kensa-sample-machined-discs-v{version.number}.zip"' in response["Content-Disposition"]
    files = unpacked(response)
    manifest = json.loads(files["manifest.json"])
    assert manifest["family"] == "gaussian"
    assert manifest["version"] == {"number": version.number, "id": str(version.public_id), "is_active": True}
    assert manifest["metrics"] == version.metrics and manifest["metrics"]["image_auroc"] is not None
    assert manifest["created_at"] == version.created_at.isoformat(timespec="seconds")
    assert manifest["class_names"] == ["dent", "scratch", "stain"]
    assert json.loads(files["classes.json"]) == {"defect_classes": ["dent", "scratch", "stain"]}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256(files[name]).hexdigest()
    assert set(files) == {*manifest["files"], "manifest.json"}
    scoring = json.loads(files["scoring.json"])
    calibration = version_calibration(version)
    assert scoring["threshold"] == calibration.threshold == manifest["threshold"]
    assert scoring["normalisation"]["scale"] == calibration.scale


def test_every_member_may_download_and_strangers_get_404(client, trained_version):  # noqa: F811
    # given: a member of each role, and a stranger with a project of their own
    version = trained_version
    members = {role: make_user(f"{role}-m") for role in (Role.ANNOTATOR, Role.REVIEWER, Role.VIEWER)}
    for role, member in members.items():
        Membership.objects.create(project=version.project, user=member, role=role)
    stranger = make_user("stranger")
    others = project_create(name="Other line", owner=stranger)

    # when
    allowed = {}
    for role, member in members.items():
        client.force_login(member)
        allowed[role] = client.get(page_url(version))
    client.force_login(stranger)
    refused = client.get(page_url(version))
    wrong_project = client.get(
        reverse("version_bundle", kwargs={"project_id": others.public_id, "version_id": version.public_id})
    )
    client.logout()
    anonymous = client.get(page_url(version))

    # then
    for response in allowed.values():
        assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert refused.status_code == 404 and wrong_project.status_code == 404
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


def test_api_gives_the_bundle_to_a_read_token_of_the_project_only(client, trained_version):  # noqa: F811
    # given
    version = trained_version
    owner = version.project.memberships.get(role=Role.OWNER).user
    others = project_create(name="Other line", owner=owner)

    # when
    ok = client.get(api_url(version), **bearer(version.project, owner))
    predict_only = client.get(api_url(version), **bearer(version.project, owner, scopes=(Scope.PREDICT,)))
    other_token = client.get(api_url(version), **bearer(others, owner))
    other_path = client.get(api_url(version, project=others), **bearer(others, owner))
    no_token = client.get(api_url(version))
    unknown = client.get(
        reverse(
            "api_version_bundle",
            kwargs={"project_id": version.project.public_id, "version_id": "00000000-0000-0000-0000-000000000000"},
        ),
        **bearer(version.project, owner),
    )

    # then
    assert ok.status_code == 200 and ok["Content-Type"] == "application/zip"
    assert json.loads(unpacked(ok)["manifest.json"])["version"]["id"] == str(version.public_id)
    assert predict_only.status_code == 403
    assert other_token.status_code == 404 and other_path.status_code == 404
    assert other_path.json()["error"]["message"] == bundles.NO_SUCH_VERSION
    assert no_token.status_code == 401
    assert unknown.status_code == 404 and unknown.json()["error"]["message"] == bundles.NO_SUCH_VERSION


def test_api_docs_and_openapi_describe_the_bundle(client, project, owner):
    # given
    client.force_login(owner)

    # when
    schema = client.get(reverse("api_openapi")).json()
    docs = client.get(reverse("api_docs", args=[project.public_id])).content.decode()

    # then
    operation = schema["paths"]["/projects/{project_id}/versions/{version_id}/bundle.zip"]["get"]
    assert operation["x-scope"] == "read" and "application/zip" in operation["responses"]["200"]["content"]
    assert 'id="getModelBundle"' in docs and "kensa_runner.py" in docs and "-OJ" in docs


def test_saving_a_threshold_renews_the_zip_but_not_the_graph(client, trained_version):  # noqa: F811
    # given: a first download
    version = trained_version
    owner = version.project.memberships.get(role=Role.OWNER).user
    client.force_login(owner)
    first = unpacked(client.get(page_url(version)))
    graph_name = f"{version.artifact_prefix}/bundle/model.onnx"
    graph_written = default_storage.get_modified_time(graph_name)

    # when: a person moves the threshold, and the bundle is downloaded again
    new_threshold = version.threshold * 1.5
    model_version_threshold_save(version=version, threshold=new_threshold, user=owner)
    version = ModelVersion.objects.get(id=version.id)
    second = unpacked(client.get(page_url(version)))

    # then: the new threshold travels, the graph is the same export, and one zip is kept
    assert json.loads(first["scoring.json"])["threshold"] != json.loads(second["scoring.json"])["threshold"]
    assert json.loads(second["scoring.json"])["threshold"] == pytest.approx(new_threshold)
    assert first["model.onnx"] == second["model.onnx"]
    assert default_storage.get_modified_time(graph_name) == graph_written
    _, stored = default_storage.listdir(f"{version.artifact_prefix}/bundle")
    fingerprint = bundles._fingerprint(version, bundles.version_bundle_info(version=version))
    assert sorted(name for name in stored if name.endswith(".zip")) == [
        f"{bundles.bundle_name(version)}-{fingerprint}.zip"
    ]


def wide_uploads() -> list[bytes]:
    """Images longer than the 2048 px that predictions shrink uploads to: a JPEG (decoded at half scale), an RGBA
    PNG and a 16-bit PNG, each a row of synthetic parts."""
    row = np.concatenate([make_image(seed, size=64).image for seed in range(34)], axis=1)  # 64 x 2176
    jpeg = encode(np.concatenate([row, row], axis=1), "JPEG", quality=90)  # 64 x 4352
    rgba = encode(np.dstack([row, np.full(row.shape[:2], 200, np.uint8)]), "PNG")
    sixteen = encode(row[..., 0].astype(np.uint16) * 200 + 1000, "PNG")
    return [jpeg, rgba, sixteen]


def _runner_matches_stored_predictions(version, tmp_path, client) -> None:
    """The bundle's runner, on the stored image files, gives the raw and normalised scores and the calls the app
    stored for them (test split), and for an uploaded 16-bit image (the API's path)."""
    client.force_login(version.project.memberships.get(role=Role.OWNER).user)
    (tmp_path / "bundle.zip").write_bytes(b"".join(client.get(page_url(version)).streaming_content))
    bundle = Bundle.open(tmp_path / "bundle.zip")
    uploads = [png_bytes(5, size=80, mode="I;16", defect="dent"), *wide_uploads()]
    rows = list(Prediction.objects.filter(model_version=version, purpose=Purpose.TEST).select_related("image"))
    assert len(rows) >= 4
    stored = [(row, stored_file_read(row.image.file.name)) for row in rows]
    for data in uploads:
        uploaded = predict_bytes(version=version, data=data, purpose="api").prediction
        stored.append((uploaded, stored_file_read(uploaded.input_file.name)))
    for row, data in stored:
        result = bundle.score(data)
        assert result.score == pytest.approx(row.raw_score, rel=TOLERANCE, abs=TOLERANCE)
        assert result.normalised_score == pytest.approx(row.normalised_score, abs=TOLERANCE)
        assert result.is_anomalous is row.is_anomalous
        kensa_map = np.asarray(PILImage.open(io.BytesIO(stored_file_read(row.anomaly_map.name))))
        runner_map = np.asarray(PILImage.open(io.BytesIO(result.anomaly_map_png(bundle.scoring))))
        assert runner_map.shape == kensa_map.shape
        assert np.abs(runner_map.astype(int) - kensa_map.astype(int)).max() <= 1


def test_the_runner_scores_the_apps_images_as_the_app_stored_them_gaussian(client, trained_version, tmp_path):  # noqa: F811
    _runner_matches_stored_predictions(trained_version, tmp_path, client)


@pytest.mark.parametrize(
    "family, config",
    [
        ("patchcore", {"image_size": 128, "coreset_ratio": 0.05, "min_bank_size": 64}),
        ("unet", {"image_size": 64, "epochs": 2, "batch_size": 4, "pos_weight": 3.0}),
    ],
)
def test_the_runner_scores_the_apps_images_as_the_app_stored_them(
    transactional_db, client, owner, tmp_path, family, config
):
    # given: a version trained by the app itself, small
    from webapp.samples import sample_project_create
    from webapp.training import services
    from webapp.training.execution import training_run_execute
    from webapp.training.models import RunStatus, TrainingRun

    project = sample_project_create(owner=owner, n_good=20, n_defect=9, size=96)
    run = services.training_run_request(project=project, requested_by=owner, family=family)
    TrainingRun.objects.filter(id=run.id).update(config=config)
    assert services.training_run_claim(run_id=run.id)
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error

    # then
    _runner_matches_stored_predictions(ModelVersion.objects.get(run=run), tmp_path, client)
