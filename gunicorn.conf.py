"""gunicorn settings for the reference project, read by gunicorn itself.

gunicorn loads ./gunicorn.conf.py on its own, so `gunicorn config.wsgi:application`
run from the repository root (the Procfile's web command) serves with these.
Options given on the command line still win over this file.

A request whose bytes trickle in holds one gthread thread for as long as it
trickles: gthread parks a connection that has sent nothing (after 5 s), but
once bytes arrive a thread reads the request with blocking reads and no
deadline. `timeout` (only the worker's heartbeat), `keepalive` (idle kept-alive
connections), `worker_connections` and `limit_request_*` (sizes, not time) do
not bound that: with each of them set low, 20 clients trickling one byte every
0.5 s still held every thread of 2 workers x 8 threads and no delivery was
answered within 10 s. What lets deliveries through is a thread free in
whichever worker accepts them, hence `threads` below. A buffering proxy in
front (docs/guarantees.md) stops slow senders before they reach gunicorn.
"""

import os

# A slow sender holds one thread, not the whole process as it would a sync worker.
worker_class = "gthread"

# Processes: one per core (the reference machine has 2); WEB_CONCURRENCY as platforms set it.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# One worker may get nearly all slow senders (18 of 20 seen), so it alone outnumbers 20 (+12).
threads = int(os.environ.get("WEB_THREADS", "32"))

# Loopback, for a proxy on the same host; port from WEB_PORT (make run) or the platform's PORT.
bind = f"127.0.0.1:{os.environ.get('WEB_PORT') or os.environ.get('PORT') or '8000'}"

# Access log to stdout, where the process manager (honcho, systemd, a platform) collects it.
accesslog = "-"

# A stop or deploy lets requests in flight (milliseconds each) finish, but waits 10 s at most.
graceful_timeout = 10
