"""Keys ready for Redis Cluster: every script's keys hash to one slot, the queue's."""

import pytest
from redis.crc import key_slot

from jobqueue import scripts
from jobqueue.keys import KEY_NAMES, Keys

SCRIPTS = sorted(path.stem for path in scripts.HERE.glob("*.lua"))


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("queue", ["email", "analytics", "payment", "a:b"])
def test_every_script_touches_one_slot(script, queue):
    keys = Keys("rideshare")
    for job_id in ("", "payment-86fecbbd2a41c07e", "ride-completed-12-ab"):  # '' : scripts over many jobs
        slots = {key_slot(key.encode()) for key in keys.for_script(job_id, queue)}
        assert slots == {key_slot(keys.tag(queue).encode())}, (script, queue, job_id)
    assert len(keys.for_script("x", queue)) == len(KEY_NAMES)


def test_keys_a_script_builds_itself_keep_the_queues_tag():
    """fetch/clean/finish build job keys from K.job (the queue's job prefix); the scripts build
    search indexes and per-minute buckets on K.tag: all in the queue's slot."""
    keys = Keys("rideshare")
    slot = key_slot(keys.tag("payment").encode())
    named = dict(zip(KEY_NAMES, keys.for_script("", "payment"), strict=True))
    built = [named["job"] + "abc", keys.job("abc", "payment") + ":added", named["tag"] + ":idx:rideId:12",
             named["tag"] + ":m:29999999",
             keys.queue("payment", "metrics")]  # fmt: skip
    assert {key_slot(key.encode()) for key in built} == {slot}


def test_scripts_never_name_a_key_outside_the_queue():
    for name in SCRIPTS:
        text = scripts.source(name)
        assert ":metrics'" not in text and "prefix .. ':job:'" not in text, name
