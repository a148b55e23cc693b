from django import forms

from ml.registry import FAMILIES
from webapp.training.services import IMAGE_SIZES

FAMILY_LABELS = {
    "patchcore": "PatchCore — learns good parts only (default)",
    "autoencoder": "Autoencoder — learns to redraw good parts",
    "unet": "U-Net — learns from outlined defects",
    "gaussian": "Gaussian baseline — trains in seconds",
}


class TrainForm(forms.Form):
    family = forms.ChoiceField(
        required=False, choices=[("", "Automatic (recommended)")] + [(f, FAMILY_LABELS.get(f, f)) for f in FAMILIES]
    )
    image_size = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, choices=[("", "Family default")] + [(s, s) for s in IMAGE_SIZES]
    )
    backbone = forms.CharField(required=False, max_length=64, help_text="A timm model name with weights on this server")
