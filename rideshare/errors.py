"""One JSON error envelope for every HTTP error: code, status and a message, never an HTML page."""

from typing import Any

from flask import Flask, current_app
from flask_smorest import Api
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

ErrorResponse = tuple[dict[str, Any], int, dict[str, str]]


def _message(exc: HTTPException) -> str:
    if isinstance(exc, RequestEntityTooLarge):
        return f"The request body is larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes."
    if isinstance(exc, MethodNotAllowed):
        return f"Allowed methods: {', '.join(sorted(exc.valid_methods or ()))}."
    return exc.description or exc.name


def init_app(app: Flask, api: Api) -> None:
    """Wrap flask-smorest's HTTP error handler so each body carries a message (and a 405 its Allow header)."""

    def http_error(exc: HTTPException) -> ErrorResponse:
        payload, code, headers = api.handle_http_exception(exc)
        payload.setdefault("message", _message(exc))
        if isinstance(exc, MethodNotAllowed):
            # flask-smorest's JSON error drops werkzeug's Allow header, which a 405 must carry (RFC 9110 15.5.6).
            headers = {**headers, "Allow": ", ".join(sorted(exc.valid_methods or ()))}
        return payload, code, headers

    app.register_error_handler(HTTPException, http_error)
