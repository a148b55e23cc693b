from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "webapp.images"
    label = "images"
