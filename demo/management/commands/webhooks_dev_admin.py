"""Create the local admin login (admin / admin) that `make run` prints."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or reset the local development superuser admin/admin."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        user, _ = User.objects.get_or_create(username="admin")
        user.is_staff = user.is_superuser = True
        user.set_password("admin")
        user.save()
