from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "webapp.accounts"
    label = "accounts"

    def ready(self) -> None:
        from django.contrib import admin

        from webapp.accounts.forms import AdminSignInForm

        admin.site.login_form = AdminSignInForm  # the admin's login page is throttled like the app's
