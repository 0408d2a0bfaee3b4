"""A bench-only app whose handler fails the first attempts of every event (bench.retry_backlog).

Installed only by bench/retry_settings.py; its webhooks.py is found by the
same handler discovery as every installed app's (webhook_worker/apps.py).
"""
