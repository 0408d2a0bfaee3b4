from django.db import models


class SideEffect(models.Model):
    """A row a test handler writes: committed only if the event's transaction commits."""

    event_id = models.CharField(max_length=255, db_index=True)
    handler = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.handler} for {self.event_id} (attempt {self.attempt})"
