"""Operator alerts: an ERROR log line, plus a POST to ALERT_WEBHOOK_URL when configured."""

import json
import logging
import urllib.request
from typing import Any

from flask import current_app

log = logging.getLogger("rideshare.alerts")


def raise_alert(summary: str, **fields: Any) -> None:
    """Tell operators something needs a human: log it, then call the webhook if any."""
    log.error("alert", extra={"alert": summary, **fields})
    url = current_app.config.get("ALERT_WEBHOOK_URL")
    if not url:
        return
    body = json.dumps({"alert": summary, **fields}, default=str).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
    except OSError as exc:
        # The alert is already in the log; a dead webhook must not fail the job bookkeeping.
        log.error("alert.webhook_failed", extra={"alert": summary, "error": str(exc)})
