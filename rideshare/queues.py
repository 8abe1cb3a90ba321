"""Every queue's policy, each declared beside its domain, and the queue names derived from them.

The API reads the policies to queue jobs; it never imports the tasks that run them.
"""

from jobqueue import QueuePolicy
from rideshare.analytics.queue import ANALYTICS_QUEUE
from rideshare.mail.queue import EMAIL_QUEUE
from rideshare.payments.queue import PAYMENT_QUEUE

POLICIES: tuple[QueuePolicy, ...] = (EMAIL_QUEUE, ANALYTICS_QUEUE, PAYMENT_QUEUE)
QUEUES: tuple[str, ...] = tuple(policy.name for policy in POLICIES)
