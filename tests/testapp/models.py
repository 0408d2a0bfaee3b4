from django.db import models


class SideEffect(models.Model):
    """A row a test handler writes: committed only if the event's transaction commits."""

    event_id = models.CharField(max_length=255, db_index=True)
    handler = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.handler} for {self.event_id} (attempt {self.attempt})"


class ObjectState(models.Model):
    """What a handler last wrote about a Stripe object: shows which event's state won."""

    object_id = models.CharField(max_length=255)
    handler = models.CharField(max_length=64)
    event_id = models.CharField(max_length=255)
    version = models.CharField(max_length=64, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["object_id", "handler"], name="one_state_per_handler")
        ]

    def __str__(self) -> str:
        return f"{self.object_id} by {self.handler}: {self.event_id}"
