from __future__ import annotations

from django import forms

from webapp.annotations.transfer import FORMATS
from webapp.images.models import Label


class ImportForm(forms.Form):
    format = forms.ChoiceField(choices=list(FORMATS.items()))
    archive = forms.FileField(help_text="A zip with the images and the annotation file.")


class SaveForm(forms.Form):
    """The editor's save: the version it started from, the label, and the classes whose drawings it sends."""

    version = forms.IntegerField(min_value=0)
    label = forms.ChoiceField(choices=Label.choices)
    class_ids = forms.CharField(required=False)  # comma-separated ids of the classes sent

    def clean_class_ids(self) -> list[int]:
        raw = self.cleaned_data["class_ids"]
        try:
            return [int(v) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise forms.ValidationError("class_ids: comma-separated numbers.") from None
