from __future__ import annotations

from django import forms

from webapp.annotations.transfer import FORMATS
from webapp.images.models import Label


class ImportForm(forms.Form):
    format = forms.ChoiceField(choices=list(FORMATS.items()))
    archive = forms.FileField(help_text="A zip with the images and the annotation file.")


CLASS_IDS_TOO_LONG = "class_ids: {length:,} characters; at most {limit:,} are accepted."
CLASS_IDS_NOT_NUMBERS = "class_ids: comma-separated numbers."
MAX_CLASS_IDS_CHARS = 10_000  # a thousand classes and more


class SaveForm(forms.Form):
    """The editor's save: the version it started from, the label, and the classes whose drawings it sends."""

    version = forms.IntegerField(min_value=0)
    label = forms.ChoiceField(choices=Label.choices)
    class_ids = forms.CharField(required=False)  # comma-separated ids of the classes sent

    def clean_class_ids(self) -> list[int]:
        """The ids in the order sent, each once (a repeat would only redo the same layer)."""
        raw = self.cleaned_data["class_ids"]
        if len(raw) > MAX_CLASS_IDS_CHARS:
            raise forms.ValidationError(CLASS_IDS_TOO_LONG.format(length=len(raw), limit=MAX_CLASS_IDS_CHARS))
        try:
            return list(dict.fromkeys(int(v) for v in raw.split(",") if v.strip()))
        except ValueError:
            raise forms.ValidationError(CLASS_IDS_NOT_NUMBERS) from None
