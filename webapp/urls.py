from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from webapp.accounts import views as accounts
from webapp.annotations import views as annotations
from webapp.api import urls as api_urls
from webapp.audit import views as audit
from webapp.dashboard import bundle_views
from webapp.dashboard import views as dashboard
from webapp.images import views as images
from webapp.inference import views as inference
from webapp.projects import views as projects
from webapp.review import views as review
from webapp.robustness import views as robustness
from webapp.training import views as training

P = "projects/<uuid:project_id>"
PRED = f"{P}/predictions/<int:prediction_id>"

urlpatterns = [
    path("accounts/login/", accounts.SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/users/", accounts.user_list, name="user_list"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_urls.api_urlpatterns)),
    *api_urls.page_urlpatterns,
    path("", projects.project_list, name="project_list"),
    path("projects/sample/", projects.sample_create, name="sample_create"),
    path(f"{P}/", projects.project_detail, name="project_detail"),
    path(f"{P}/settings/", projects.project_settings, name="project_settings"),
    path(f"{P}/settings/disk-use/", inference.project_disk_use_view, name="project_disk_use"),
    path(f"{P}/rename/", projects.project_rename, name="project_rename"),
    path(f"{P}/delete/", projects.project_delete, name="project_delete"),
    path(f"{P}/members/", projects.member_set, name="member_set"),
    path(f"{P}/members/<int:membership_id>/remove/", projects.member_remove, name="member_remove"),
    path(f"{P}/classes/", projects.defect_class_create, name="defect_class_create"),
    path(f"{P}/classes/<int:class_id>/delete/", projects.defect_class_delete, name="defect_class_delete"),
    path(f"{P}/images/", images.image_grid, name="image_grid"),
    path(f"{P}/images/bulk/", images.image_bulk, name="image_bulk"),
    path(f"{P}/images/bulk/undo/", images.image_bulk_undo, name="image_bulk_undo"),
    path(f"{P}/images/upload/", images.image_upload, name="image_upload"),
    path(f"{P}/images/rebalance/", images.splits_rebalance_view, name="splits_rebalance"),
    path(f"{P}/images/<uuid:image_id>/", images.image_detail, name="image_detail"),
    path(f"{P}/images/<uuid:image_id>/original/", images.image_file, {"kind": "original"}, name="image_original"),
    path(f"{P}/images/<uuid:image_id>/thumbnail/", images.image_file, {"kind": "thumbnail"}, name="image_thumbnail"),
    path(f"{P}/masks/<int:annotation_id>/", images.annotation_mask, name="annotation_mask"),
    path(f"{P}/images/<uuid:image_id>/annotate/", annotations.annotation_editor, name="annotation_editor"),
    path(f"{P}/images/<uuid:image_id>/annotate/save/", annotations.annotation_save, name="annotation_save"),
    path(f"{P}/datasets/", annotations.dataset_transfer, name="dataset_transfer"),
    path(f"{P}/datasets/export/<slug:fmt>/", annotations.dataset_export, name="dataset_export"),
    path(f"{P}/train/", training.train_page, name="train"),
    path(f"{P}/train/validation/", training.validation_fill, name="validation_fill"),
    path(f"{P}/train/split-changes/<int:entry_id>/undo/", training.split_change_undo, name="split_change_undo"),
    path(f"{P}/runs/<uuid:run_id>/", training.run_detail, name="run_detail"),
    path(f"{P}/runs/<uuid:run_id>/cancel/", training.run_cancel, name="run_cancel"),
    path(f"{P}/model/", dashboard.model_home, name="model_home"),
    path(f"{P}/versions/compare/", dashboard.version_compare, name="version_compare"),
    path(f"{P}/versions/<uuid:version_id>/", dashboard.version_detail, name="version_detail"),
    path(f"{P}/versions/<uuid:version_id>/threshold/", dashboard.version_threshold_save, name="version_threshold_save"),
    path(f"{P}/versions/<uuid:version_id>/bundle/", bundle_views.version_bundle, name="version_bundle"),
    path(f"{P}/versions/<uuid:version_id>/robustness/", robustness.robustness_report, name="robustness_report"),
    path(f"{P}/versions/<uuid:version_id>/robustness/start/", robustness.robustness_start, name="robustness_start"),
    path(
        f"{P}/robustness/<uuid:run_id>/worst/<int:index>/<slug:kind>.png",
        robustness.robustness_example,
        name="robustness_example",
    ),
    path(f"{PRED}/heatmap/", dashboard.prediction_file, {"kind": "heatmap"}, name="prediction_heatmap"),
    path(f"{PRED}/mask/", dashboard.prediction_file, {"kind": "mask"}, name="prediction_mask"),
    path(f"{PRED}/input/", dashboard.prediction_file, {"kind": "input"}, name="prediction_input"),
    path(f"{P}/try/", dashboard.trial_page, name="trial"),
    path(f"{P}/try/<int:prediction_id>/add/", dashboard.trial_add, name="trial_add"),
    path(f"{P}/versions/<uuid:version_id>/activate/", training.version_activate, name="version_activate"),
    path(f"{P}/review/", review.review_queue, name="review_queue"),
    path(f"{P}/review/policy/", review.review_policy_save, name="review_policy_save"),
    path(f"{P}/review/<int:item_id>/", review.review_item, name="review_item"),
    path(f"{P}/review/<int:item_id>/decide/", review.review_decide, name="review_decide"),
    path(f"{P}/audit/", audit.audit_log, name="audit_log"),
    path(f"{P}/audit/export.csv", audit.audit_export, name="audit_export"),
    path("", include("webapp.stations.urls")),
]
