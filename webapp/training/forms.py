from django import forms

from ml.registry import FAMILIES
from webapp.training.candidates import BUDGET_MINUTES, DEFAULT_BUDGET_MINUTES
from webapp.training.services import IMAGE_SIZES, ROTATION_CHOICES, TILING_CHOICES

FAMILY_LABELS = {
    "patchcore": "PatchCore — learns good parts only (default)",
    "autoencoder": "Autoencoder — learns to redraw good parts",
    "unet": "U-Net — learns from outlined defects",
    "gaussian": "Gaussian baseline — trains in seconds",
    "context": "Context — your defects include wrong placement, order or missing parts",
}


class TrainForm(forms.Form):
    family = forms.ChoiceField(
        required=False, choices=[("", "Automatic (recommended)")] + [(f, FAMILY_LABELS.get(f, f)) for f in FAMILIES]
    )
    image_size = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, choices=[("", "Automatic")] + [(s, s) for s in IMAGE_SIZES]
    )
    # PatchCore: rotated copies of each good image (issue 21); automatic = chosen from the data (ml.adaptive).
    rotations = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "Automatic"), (1, "None")] + [(r, f"{r - 1} (every {360 // r}°)") for r in ROTATION_CHOICES[1:]],
    )
    # PatchCore on large images (issue 16): automatic = tiles once images are over three times the image size.
    tiling = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("", "Automatic (tiles for large images)"), (0, "Off: whole image resized")]
        + [(n, f"Tiles, image brought to {n} px") for n in TILING_CHOICES[1:]],
    )
    backbone = forms.CharField(required=False, max_length=64, help_text="A timm model name with weights on this server")
    # Automatic runs only (issue 20): more families to train beside the candidates the labels allow, and how long
    # fitting the candidates may take.
    compare_families = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[(f, FAMILY_LABELS.get(f, f)) for f in FAMILIES if f != "patchcore"],
    )
    budget_minutes = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=DEFAULT_BUDGET_MINUTES,
        initial=DEFAULT_BUDGET_MINUTES,
        choices=[(m, f"{m} min") for m in BUDGET_MINUTES],
    )
