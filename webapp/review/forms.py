from django import forms

from webapp.images.models import Split


class ReviewPolicyForm(forms.Form):
    enabled = forms.BooleanField(
        required=False,
        label="Send predictions to review",
        help_text="Predictions from Try it, batches and the API; the test split's are never sent.",
    )
    band_low = forms.FloatField(
        min_value=0,
        max_value=1,
        label="Uncertain from",
        help_text="Scores are normalised so that 0.5 is the model's threshold: above it a part is called defect.",
    )
    band_high = forms.FloatField(
        min_value=0,
        max_value=1,
        label="to",
        help_text="Scores in this band (both ends included) go to a person. A wider band means more reviews and "
        "fewer wrong calls on the line; 0.4 to 0.6 is a start.",
    )
    audit_percent = forms.FloatField(
        min_value=0,
        max_value=100,
        label="Random audit (%)",
        help_text="This share of all other predictions also goes to review, to catch confident mistakes.",
    )
    split = forms.ChoiceField(
        choices=Split.choices,
        label="Decided images join",
        help_text="Reviewed images enter the dataset in this split with the reviewer's label: train to learn from "
        "them, validation or test to measure with them.",
    )
