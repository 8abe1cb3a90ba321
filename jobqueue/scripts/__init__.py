"""The job store's Lua scripts, one file per state change, loaded with named keys."""

from pathlib import Path
from typing import Any

from jobqueue.keys import KEY_NAMES, STATES

HERE = Path(__file__).parent


def _lua_list(names: tuple[str, ...]) -> str:
    return "{" + ", ".join(f"'{n}'" for n in names) + "}"


# Binds KEYS to their names and lists the states, from the one list in jobqueue.keys.
PREAMBLE = f"""
local K = {{}}
for i, name in ipairs({_lua_list(KEY_NAMES)}) do K[name] = KEYS[i] end
local STATES = {_lua_list(STATES)}
"""


def source(name: str) -> str:
    """The full text of one script: the preamble, the shared includes, then the script."""
    includes = "".join(p.read_text() for p in sorted((HERE / "includes").glob("*.lua")))
    return PREAMBLE + includes + (HERE / f"{name}.lua").read_text()


def register_all(client: Any) -> dict[str, Any]:
    """Every script registered on a redis-py client, by name."""
    return {path.stem: client.register_script(source(path.stem)) for path in sorted(HERE.glob("*.lua"))}
