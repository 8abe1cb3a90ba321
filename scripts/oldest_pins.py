"""Print the oldest release each ranged core dependency allows (its >= bound), as pip pins.

    python scripts/oldest_pins.py            # celery[redis]==5.7.0 kombu==5.7.0 redis==8.1.0 ...
    python scripts/oldest_pins.py --check    # exit 0 when the installed releases are those: nothing older to test

scripts/run-tests.sh runs the integration tests once more on these pins when they differ
from what is installed (the newest releases in each range).
"""

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

# The libraries the engine leans on; a release of any of them can change what it relies on.
RANGED = ("celery", "kombu", "redis", "hiredis")


def oldest_pins() -> dict[str, str]:
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    pins: dict[str, str] = {}
    for requirement in project["project"]["dependencies"]:
        match = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,<\s]*)", requirement)
        if match and match.group(1).lower() in RANGED:
            pins[match.group(1).lower() + (match.group(2) or "")] = match.group(3)
    return pins


def main() -> int:
    pins = oldest_pins()
    if "--check" in sys.argv:
        installed = {name.split("[")[0]: metadata.version(name.split("[")[0]) for name in pins}
        same = all(_same(installed[name.split("[")[0]], version) for name, version in pins.items())
        print(" ".join(f"{name.split('[')[0]} {installed[name.split('[')[0]]}" for name in pins))
        return 0 if same else 1
    print(" ".join(f"{name}=={version}" for name, version in pins.items()))
    return 0


def _same(installed: str, bound: str) -> bool:
    """5.7 and 5.7.0 are the same release."""
    norm = [int(part) for part in re.findall(r"\d+", installed)[:3]]
    want = [int(part) for part in re.findall(r"\d+", bound)[:3]]
    return norm + [0] * (3 - len(norm)) == want + [0] * (3 - len(want))


if __name__ == "__main__":
    sys.exit(main())
