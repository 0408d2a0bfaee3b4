"""The reference project's WSGI application without the WebhookLane in front.

Every delivery goes through Django's request handling:
`bench.run --variant NAME:WSGI=bench.django_wsgi:application`.
"""

from __future__ import annotations

from config.wsgi import application as _lane

application = _lane.application
