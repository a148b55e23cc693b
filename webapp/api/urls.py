"""The API under /api/v1/ (token auth, JSON) and the project pages about it (session auth, HTML)."""

from django.urls import path

from webapp.api import views

P = "projects/<uuid:project_id>"

# Mounted at /api/v1/. Every route here is described in webapp/api/openapi.py (a test checks it).
api_urlpatterns = [
    path("openapi.json", views.openapi_json, name="api_openapi"),
    path("projects/", views.projects_list, name="api_projects"),
    path(f"{P}/versions/", views.versions_list, name="api_versions"),
    path(f"{P}/versions/<uuid:version_id>/bundle.zip", views.version_bundle, name="api_version_bundle"),
    path(f"{P}/predict/", views.predict, name="api_predict"),
    path(f"{P}/batches/", views.batch_create, name="api_batch_create"),
    path(f"{P}/batches/<uuid:job_id>/", views.batch_detail, name="api_batch_detail"),
    path(f"{P}/predictions/<int:prediction_id>/anomaly_map.png", views.prediction_map, name="api_prediction_map"),
    path(f"{P}/predictions/<int:prediction_id>/mask.png", views.prediction_mask, name="api_prediction_mask"),
]

page_urlpatterns = [
    path(f"{P}/api/", views.api_docs, name="api_docs"),
    path(f"{P}/api/tokens/", views.api_tokens, name="api_tokens"),
    path(f"{P}/api/tokens/<int:token_id>/revoke/", views.api_token_revoke, name="api_token_revoke"),
]
