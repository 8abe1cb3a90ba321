"""Run localstripe bound to 127.0.0.1 only (its own CLI listens on every interface).

python -m devstack.localstripe_server --port 8420
"""

import argparse
import logging

from aiohttp import web
from localstripe import server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--persist", action="store_true", help="keep state in /tmp/localstripe.pickle across restarts")
    args = parser.parse_args()
    if args.persist:
        server.store.try_load_from_disk()
    else:
        # Every write would otherwise pickle the whole store to a shared /tmp file.
        server.store.dump_to_disk = lambda: None
    logging.basicConfig(level=logging.WARNING)
    web.run_app(server.app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
