"""The app's transactional outbox table (jobqueue.outbox), on the app's metadata so its migrations own it."""

from jobqueue.outbox import outbox_table
from rideshare.db import Base

JOB_OUTBOX = outbox_table(Base.metadata)
