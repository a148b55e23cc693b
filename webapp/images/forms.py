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
CLASS_ACTION = "class_{id}"  # files the selected images' drawings under the defect class with this id
SCOPE_SELECTED = "selected"
SCOPE_FILTER = "filter"  # every image the grid's current filter matches, on all pages


def bulk_actions(defect_classes) -> dict[str, str]:
    """The bulk menu: the fixed actions, and one "move drawings to <class>" per defect class (before delete)."""
    actions = {k: v for k, v in BULK_ACTIONS.items() if k != "delete"}
    actions.update({CLASS_ACTION.format(id=c.id): f"Move drawings to class {c.name}" for c in defect_classes})
    actions["delete"] = BULK_ACTIONS["delete"]
    return actions


class ImageIdsField(forms.Field):
    """A list of image ids from checkboxes; the services keep only ids that belong to the project."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value):
        try:
            return [int(v) for v in value or []]
        except (TypeError, ValueError):
            raise forms.ValidationError("Invalid image selection.") from None


class BulkForm(forms.Form):
    action = forms.ChoiceField()
    scope = forms.ChoiceField(choices=[(SCOPE_SELECTED, "selected"), (SCOPE_FILTER, "filter")], required=False)
    image_ids = ImageIdsField(required=False)
    # The number of images the filter matched when the page was shown: the action is refused if it changed.
    expected_count = forms.IntegerField(required=False, min_value=0)

    def __init__(self, *args, defect_classes=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = list(bulk_actions(defect_classes).items())

    def clean(self):
        data = super().clean()
        if data.get("scope") == SCOPE_FILTER:
            if data.get("expected_count") is None:
                raise forms.ValidationError("The number of matching images is missing; reload the page.")
        elif not data.get("image_ids"):
            raise forms.ValidationError(NOTHING_SELECTED)
        return data


NOTHING_SELECTED = "Select at least one image, or apply to all images matching the filter."


class BulkUndoForm(forms.Form):
    entry = forms.IntegerField(min_value=1)


class ImageEditForm(forms.Form):
    label = forms.ChoiceField(choices=Label.choices)
    split = forms.ChoiceField(choices=Split.choices)
