"""Forms of the Station pages. Source, sink and rule settings are JSON objects (documented in docs/deploy.md and
beside each kind); a folder path has a field of its own because it is what most stations need."""

from __future__ import annotations

import json

from django import forms

from webapp.stations.models import SinkKind, SourceKind
from webapp.stations.sources import SOURCE_KINDS

BAD_JSON = "Not valid JSON: {error}."
NOT_OBJECT = "Expected a JSON object, like {example}."


def _json_object(raw: str, example: str) -> dict:
    raw = (raw or "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise forms.ValidationError(BAD_JSON.format(error=error.msg)) from None
    if not isinstance(value, dict):
        raise forms.ValidationError(NOT_OBJECT.format(example=example))
    return value


class StationForm(forms.Form):
    name = forms.CharField(max_length=120)
    source_kind = forms.ChoiceField(label="Source")
    folder_path = forms.CharField(
        max_length=1000, required=False, label="Folder", help_text="for a watched folder: the folder to watch"
    )
    source_settings = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        label="Source settings (JSON)",
        help_text='e.g. {"poll_seconds": 0.2, "after": "delete"} or {"url": "rtsp://camera/stream", "fps": 5}',
    )
    version = forms.ChoiceField(label="Model", required=False)
    rules = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        label="Rules (JSON)",
        help_text='e.g. {"review_band": [0.4, 0.6], "pixels_per_mm": 10, '
        '"regions": [{"class": "*", "min_area_mm2": 0.5, "max_count": 0}]}',
    )

    def __init__(self, *args, versions=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["source_kind"].choices = [(k, label) for k, label in SourceKind.choices if k in SOURCE_KINDS]
        self.fields["version"].choices = [("", "the active version")] + [
            (str(v.public_id), f"v{v.number} ({v.family}), pinned") for v in versions
        ]

    def clean_source_settings(self) -> dict:
        return _json_object(self.cleaned_data.get("source_settings", ""), '{"poll_seconds": 0.2}')

    def clean_rules(self) -> dict:
        return _json_object(self.cleaned_data.get("rules", ""), '{"review_band": [0.4, 0.6]}')

    def settings_for_source(self) -> dict:
        settings = dict(self.cleaned_data["source_settings"])
        if self.cleaned_data.get("folder_path", "").strip():
            settings["path"] = self.cleaned_data["folder_path"].strip()
        return settings


class SinkForm(forms.Form):
    kind = forms.ChoiceField(choices=SinkKind.choices)
    settings = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Settings (JSON)",
        help_text='MQTT {"host": "broker", "port": 1883} · webhook {"url": "https://…", "secret": "…"} · '
        'folder {"path": "/srv/sorted"} · Modbus {"port": 5020}',
    )

    def clean_settings(self) -> dict:
        return _json_object(self.cleaned_data.get("settings", ""), '{"host": "broker"}')
