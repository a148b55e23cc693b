from django import forms

from webapp.images.models import Split


class ReviewPolicyForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Send predictions to review")
    band_low = forms.FloatField(min_value=0, max_value=1, label="Uncertain from")
    band_high = forms.FloatField(min_value=0, max_value=1, label="to")
    audit_percent = forms.FloatField(min_value=0, max_value=100, label="Random audit (%)")
    split = forms.ChoiceField(choices=Split.choices, label="Decided images join")
