"""Creates the first administrator from KENSA_ADMIN_USERNAME / KENSA_ADMIN_PASSWORD / KENSA_ADMIN_EMAIL, or by
asking at the terminal. Does nothing when an administrator exists already."""

import getpass
import os
import sys

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the first administrator account if there is none."

    def handle(self, *args, **options):
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("An administrator exists already.")
            return
        username = os.environ.get("KENSA_ADMIN_USERNAME", "")
        password = os.environ.get("KENSA_ADMIN_PASSWORD", "")
        email = os.environ.get("KENSA_ADMIN_EMAIL", "")
        if not (username and password):
            if not sys.stdin.isatty():
                raise CommandError("No administrator yet: set KENSA_ADMIN_USERNAME and KENSA_ADMIN_PASSWORD.")
            username = input("Administrator user name: ").strip()
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password again: ") != password:
                raise CommandError("The passwords differ.")
        user = users(username=username, email=email)
        try:
            from django.contrib.auth.password_validation import validate_password

            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        users.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(self.style.SUCCESS(f"Created administrator {username}."))
