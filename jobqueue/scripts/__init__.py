"""The job store's Lua scripts, one file per kind of move, loaded with named keys and the transition table."""

from pathlib import Path
from typing import Any

from jobqueue.keys import KEY_NAMES
from jobqueue.lifecycle import PRIORITY_STEP, lua_table

HERE = Path(__file__).parent


def _lua_list(names: tuple[str, ...]) -> str:
    return "{" + ", ".join(f"'{n}'" for n in names) + "}"


# Binds KEYS to their names, and the transition table, from jobqueue.keys and jobqueue.lifecycle.
PREAMBLE = f"""
local K = {{}}
for i, name in ipairs({_lua_list(KEY_NAMES)}) do K[name] = KEYS[i] end
local ALLOWED = {lua_table()}
local PRIORITY_STEP = {PRIORITY_STEP}
"""


def source(name: str) -> str:
    """The full text of one script: the preamble, the shared includes, then the script."""
    includes = "".join(p.read_text() for p in sorted((HERE / "includes").glob("*.lua")))
    return PREAMBLE + includes + (HERE / f"{name}.lua").read_text()


def register_all(client: Any) -> dict[str, Any]:
    """Every script registered on a redis-py client, by name."""
    return {path.stem: client.register_script(source(path.stem)) for path in sorted(HERE.glob("*.lua"))}
