from django.urls import path

from webapp.stations.views import STATION_URLS

P = "projects/<uuid:project_id>"

urlpatterns = [path(f"{P}/{route}", view, name=name) for route, view, name in STATION_URLS]
