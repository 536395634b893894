"""`python -m pipeline.server [--host H] [--port P] [--auth] [key=value ...]`: an MLflow tracking
server over the project's store, bound to 127.0.0.1 by default (see
`pipeline.tracking.mlflow_server`)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.server",
        description="MLflow tracking server over the project's store (127.0.0.1 by default); "
        "tracking=postgres serves a PostgreSQL store (docs/team.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other hosts")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn/uvicorn workers")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="MLflow basic auth (first start: MLFLOW_AUTH_ADMIN_PASSWORD); searches sign in "
        "with MLFLOW_TRACKING_USERNAME/PASSWORD",
    )
    parser.add_argument("overrides", nargs="*", help="e.g. tracking.uri=postgresql://...")
    args = parser.parse_intermixed_args(argv)

    from pipeline.runtime.cli import composed, guarded, stop_on_signals
    from pipeline.tracking.mlflow_server import serve

    cfg = composed(args.overrides)
    stop_on_signals()  # SIGTERM/SIGINT stop the server's whole process group
    return guarded(lambda: serve(cfg.tracking, args.host, args.port, args.workers, auth=args.auth))


if __name__ == "__main__":
    sys.exit(main())
