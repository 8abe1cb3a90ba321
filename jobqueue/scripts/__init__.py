"""The job store's Lua scripts, one file per kind of move, loaded with named keys and the transition table."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobqueue.keys import KEY_NAMES
from jobqueue.lifecycle import PRIORITY_STEP, lua_table

HERE = Path(__file__).parent
# Upper bounds (ms) of the wait-time and processing-time buckets of the per-minute metrics.
MINUTE_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 300000)
# Per-minute metric buckets are kept this long (72 hours, and an hour to spare).
MINUTE_BUCKET_TTL_S = 73 * 3600


@dataclass(frozen=True)
class Features:
    """What the scripts keep besides the job's own state; each can be turned off (bench/ measures them)."""

    events: int = 10_000  # the events stream's length (about); 0: no events
    buckets: bool = True  # per-minute metric buckets (counts, wait and processing times)
    indexes: bool = True  # search indexes (tags, creation order)
    log_lines: int = 100  # job.log lines kept per attempt
    log_line_chars: int = 500  # longer lines are cut


DEFAULT_FEATURES = Features()


def _lua_list(names: tuple[Any, ...]) -> str:
    return "{" + ", ".join(repr(n) if isinstance(n, str) else str(n) for n in names) + "}"


def preamble(features: Features = DEFAULT_FEATURES) -> str:
    """Binds KEYS to their names, the transition table and the features, from jobqueue.keys and jobqueue.lifecycle."""
    return f"""
local K = {{}}
for i, name in ipairs({_lua_list(KEY_NAMES)}) do K[name] = KEYS[i] end
local ALLOWED = {lua_table()}
local PRIORITY_STEP = {PRIORITY_STEP}
local EVENTS_MAXLEN = {features.events}
local BUCKETS = {str(features.buckets).lower()}
local INDEXES = {str(features.indexes).lower()}
local LOG_LINES = {features.log_lines}
local MINUTE_BOUNDS = {_lua_list(MINUTE_BOUNDS_MS)}
local MINUTE_TTL = {MINUTE_BUCKET_TTL_S}
"""


PREAMBLE = preamble()


def source(name: str, features: Features = DEFAULT_FEATURES) -> str:
    """The full text of one script: the preamble, the shared includes, then the script."""
    includes = "".join(p.read_text() for p in sorted((HERE / "includes").glob("*.lua")))
    return preamble(features) + includes + (HERE / f"{name}.lua").read_text()


def register_all(client: Any, features: Features = DEFAULT_FEATURES) -> dict[str, Any]:
    """Every script registered on a redis-py client, by name."""
    return {path.stem: client.register_script(source(path.stem, features)) for path in sorted(HERE.glob("*.lua"))}
