"""Peers the bench measures beside the service, in the same run: stock Celery, Dramatiq, BullMQ.

Each peer runs a no-op job that only counts itself (a Redis INCR on COUNTER), so the
bench knows when a drain is done the same way for all of them. bench/peers_run.py
drives them; see its docstring for what is timed.
"""

# Keys every peer's no-op job and worker use, in the Redis the bench gives them.
COUNTER = "bench:peers:done"
# Dramatiq and BullMQ workers INCR READY once they are connected and hold before
# consuming until they pop a token from GATE (one per worker process).
READY = "bench:peers:ready"
GATE = "bench:peers:gate"
