from django import forms

from webapp.projects.models import Role, colour_validator


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class RenameForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices)


class DefectClassForm(forms.Form):
    name = forms.CharField(max_length=64, strip=True)
    colour = forms.CharField(max_length=7, required=False, validators=[colour_validator])


class DeleteForm(forms.Form):
    confirm_name = forms.CharField(max_length=120)
