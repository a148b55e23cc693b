from django import forms

from webapp.images.models import Label, Split

BULK_ACTIONS = {
    "label_good": "Mark good",
    "label_defect": "Mark defect",
    "label_unlabelled": "Mark unlabelled",
    "split_train": "Move to train",
    "split_validation": "Move to validation",
    "split_test": "Move to test",
    "delete": "Delete",
}


class ImageIdsField(forms.Field):
    """A list of image ids from checkboxes; the services keep only ids that belong to the project."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        try:
            return [int(v) for v in value or []]
        except (TypeError, ValueError):
            raise forms.ValidationError("Invalid image selection.") from None

    def validate(self, value):
        if not value:
            raise forms.ValidationError("Select at least one image.")


class BulkForm(forms.Form):
    action = forms.ChoiceField(choices=list(BULK_ACTIONS.items()))
    image_ids = ImageIdsField()


class ImageEditForm(forms.Form):
    label = forms.ChoiceField(choices=Label.choices)
    split = forms.ChoiceField(choices=Split.choices)
