"""Station pages: the project's stations (owners add them), and one station's live view, which htmx refreshes
every two seconds (the same view returns only the live fragment to htmx)."""

from __future__ import annotations

import json
import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from webapp.api.decorators import api_endpoint
from webapp.projects.access import Action, project_for, role_allows
from webapp.stations import selectors, services
from webapp.stations.forms import SinkForm, StationForm
from webapp.stations.models import Sink, Station
from webapp.stations.outbox import outbox_dead_retry
from webapp.training.models import ModelVersion


def _station(project, station_id: uuid.UUID) -> Station:
    station = Station.objects.filter(project=project, public_id=station_id).select_related("pinned_version").first()
    if station is None:
        raise Http404("No such station")
    return station


def _versions(project):
    return ModelVersion.objects.filter(project=project).order_by("-number")


def _pinned(project, public_id: str) -> ModelVersion | None:
    if not public_id:
        return None
    return ModelVersion.objects.filter(project=project, public_id=public_id).first()


def _station_fields(form: StationForm, project) -> dict:
    """What creating and editing a station take from a valid form."""
    return {
        "name": form.cleaned_data["name"],
        "source_kind": form.cleaned_data["source_kind"],
        "source_settings": form.settings_for_source(),
        "rules": form.cleaned_data["rules"],
        "pinned_version": _pinned(project, form.cleaned_data.get("version", "")),
    }


def station_list(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id, Action.VIEW)
    can_manage = role_allows(role, Action.MANAGE)
    form = StationForm(versions=_versions(project))
    if request.method == "POST":
        project_for(request.user, project_id, Action.MANAGE)
        form = StationForm(request.POST, versions=_versions(project))
        if form.is_valid():
            try:
                station = services.station_create(project=project, user=request.user, **_station_fields(form, project))
            except ValidationError as error:
                form.add_error(None, error.messages[0])
            else:
                messages.success(request, f"Station “{station.name}” created; a station runner picks it up.")
                return redirect("station_detail", project.public_id, station.public_id)
    stations = list(selectors.stations_of(project=project))
    for station in stations:
        station.state = selectors.station_state(station)
    context = {"project": project, "role": role, "stations": stations, "form": form, "can_manage": can_manage}
    return render(request, "stations/list.html", context, status=400 if form.errors else 200)


def station_detail(request: HttpRequest, project_id: uuid.UUID, station_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id, Action.VIEW)
    station = _station(project, station_id)
    if request.htmx:
        return render(request, "stations/_live.html", _detail_context(project, role, station))
    return _detail_page(request, project, role, station)


def _detail_context(project, role, station: Station) -> dict:
    return {
        "project": project,
        "role": role,
        "station": station,
        "live": selectors.station_live(station=station),
        "can_manage": role_allows(role, Action.MANAGE),
    }


def _detail_page(request, project, role, station: Station, *, form=None, sink_form=None) -> HttpResponse:
    """The station page; a form that failed is shown again as it was typed, with its errors (status 400)."""
    context = _detail_context(project, role, station)
    context["form"] = form or StationForm(
        versions=_versions(project),
        initial={
            "name": station.name,
            "source_kind": station.source_kind,
            "folder_path": station.source_settings.get("path", ""),
            "source_settings": json.dumps({k: v for k, v in station.source_settings.items() if k != "path"}),
            "version": str(station.pinned_version.public_id) if station.pinned_version else "",
            "rules": json.dumps(station.rules) if station.rules else "",
        },
    )
    context["sink_form"] = sink_form or SinkForm()
    failed = (form is not None and form.errors) or (sink_form is not None and sink_form.errors)
    return render(request, "stations/detail.html", context, status=400 if failed else 200)


@require_POST
def station_edit(request: HttpRequest, project_id: uuid.UUID, station_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id, Action.MANAGE)
    station = _station(project, station_id)
    form = StationForm(request.POST, versions=_versions(project))
    if form.is_valid():
        try:
            services.station_update(station=station, user=request.user, **_station_fields(form, project))
        except ValidationError as error:
            form.add_error(None, error.messages[0])
        else:
            messages.success(request, "Saved; the runner restarts the station with the new settings.")
            return redirect("station_detail", project.public_id, station.public_id)
    return _detail_page(request, project, role, station, form=form)


@require_POST
def station_pause(request: HttpRequest, project_id: uuid.UUID, station_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    station = _station(project, station_id)
    paused = request.POST.get("paused") == "1"
    services.station_pause(station=station, user=request.user, paused=paused)
    messages.success(request, "Paused." if paused else "Resumed; a runner picks the station up within seconds.")
    return redirect("station_detail", project.public_id, station.public_id)


@require_POST
def station_delete(request: HttpRequest, project_id: uuid.UUID, station_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    station = _station(project, station_id)
    services.station_delete(station=station, user=request.user)
    messages.success(request, f"Station “{station.name}” deleted.")
    return redirect("station_list", project.public_id)


@require_POST
def sink_add(request: HttpRequest, project_id: uuid.UUID, station_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id, Action.MANAGE)
    station = _station(project, station_id)
    form = SinkForm(request.POST)
    if form.is_valid():
        try:
            services.sink_add(
                station=station,
                user=request.user,
                kind=form.cleaned_data["kind"],
                settings=form.cleaned_data["settings"],
            )
        except ValidationError as error:
            form.add_error(None, error.messages[0])
        else:
            messages.success(request, "Sink added.")
            return redirect("station_detail", project.public_id, station.public_id)
    return _detail_page(request, project, role, station, sink_form=form)


def _sink(station: Station, sink_id: int) -> Sink:
    sink = Sink.objects.filter(station=station, id=sink_id).select_related("station__project").first()
    if sink is None:
        raise Http404("No such sink")
    return sink


@require_POST
def sink_remove(request: HttpRequest, project_id: uuid.UUID, station_id: uuid.UUID, sink_id: int) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    station = _station(project, station_id)
    services.sink_remove(sink=_sink(station, sink_id), user=request.user)
    messages.success(request, "Sink removed.")
    return redirect("station_detail", project.public_id, station.public_id)


@require_POST
def sink_retry(request: HttpRequest, project_id: uuid.UUID, station_id: uuid.UUID, sink_id: int) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    station = _station(project, station_id)
    count = outbox_dead_retry(sink=_sink(station, sink_id))
    messages.success(request, f"{count} dead-lettered message(s) queued again.")
    return redirect("station_detail", project.public_id, station.public_id)


@api_endpoint(methods=("POST",), scope="predict")
def station_trigger(request: HttpRequest, station_id: uuid.UUID, *, token, project) -> HttpResponse:
    """For the line's controller: one frame now from a camera in trigger mode. Bearer token of the project."""
    station = Station.objects.filter(project=project, public_id=station_id).first()
    if station is None:
        return JsonResponse({"error": {"code": "not_found", "message": "No such station."}}, status=404)
    return JsonResponse({"station": str(station.public_id), "triggers": services.station_trigger(station=station)})


STATION_URLS = [
    # (route under projects/<uuid:project_id>/, view, name)
    ("stations/", station_list, "station_list"),
    ("stations/<uuid:station_id>/", station_detail, "station_detail"),
    ("stations/<uuid:station_id>/edit/", station_edit, "station_edit"),
    ("stations/<uuid:station_id>/pause/", station_pause, "station_pause"),
    ("stations/<uuid:station_id>/trigger/", station_trigger, "station_trigger"),
    ("stations/<uuid:station_id>/delete/", station_delete, "station_delete"),
    ("stations/<uuid:station_id>/sinks/", sink_add, "sink_add"),
    ("stations/<uuid:station_id>/sinks/<int:sink_id>/remove/", sink_remove, "sink_remove"),
    ("stations/<uuid:station_id>/sinks/<int:sink_id>/retry/", sink_retry, "sink_retry"),
]
