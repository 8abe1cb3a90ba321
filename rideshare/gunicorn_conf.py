"""gunicorn settings the API is served with: `gunicorn -c python:rideshare.gunicorn_conf 'rideshare:create_app()'`.

Header limits are set so the app, not gunicorn, judges every header it reads:
gunicorn refuses an over-long header with an HTML page (431) before the app
sees it. A header field up to LIMIT_REQUEST_FIELD_SIZE bytes reaches the app,
which bounds its own headers (Idempotency-Key: 255 characters, 400 JSON
beyond; a bearer token is well under 2 KB). Only a field longer than that, or
a request line over 8,190 bytes (gunicorn's maximum), or more than 100
fields still gets gunicorn's own plain answer. Bind, workers and threads stay
on each command line (Procfile, Dockerfile, docker-compose.yml).
"""

# 16 KiB: twice gunicorn's default, so a 10 KB header gets the app's JSON 400, not gunicorn's HTML 431.
limit_request_field_size = 16 * 1024
limit_request_fields = 100
limit_request_line = 8190
