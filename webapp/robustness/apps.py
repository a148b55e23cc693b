from django.apps import AppConfig


class RobustnessConfig(AppConfig):
    name = "webapp.robustness"
    label = "robustness"
