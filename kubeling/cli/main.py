"""The `kubeling` command: kubectl's verbs and habits for a kubeling cluster.

The client configuration (`~/.kubeling/config` or `$KUBELING_CONFIG`, or
`--config`) is the only way it finds the server, and it only talks to the
cluster through the client library.

Exit codes: 0 success, 1 any error (one `error: ...` or `Error from server
(...)` line per problem on stderr, never a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import NoReturn, Sequence

from kubeling.client.errors import ApiError
from kubeling.config import ConfigError

from . import apply, cluster, create, delete, describe, get, hollow_nodes, images, rollout, scale, set_image
from . import exec as exec_command, logs
from .common import CliError, ServerErrors, format_api_error

EXIT_INTERRUPTED = 130


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("kubeling")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0.0.0+unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one `error:` line and exit code 1, like kubectl."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message}\nSee '{self.prog} --help' for usage.")


class _VersionAction(argparse.Action):
    """--version, looking the version up only when asked (it costs a package scan)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"kubeling {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    # Flags every verb takes; SUPPRESS so a value given before the verb survives.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                        help="the namespace (default: \"default\")")
    common.add_argument("--config", "--kubeconfig", dest="config", default=argparse.SUPPRESS,
                        metavar="PATH", help="client configuration file (default: $KUBELING_CONFIG "
                                             "or ~/.kubeling/config)")

    parser = _Parser(prog="kubeling", description="Control a kubeling cluster (kubectl's verbs).")
    parser.add_argument("-n", "--namespace", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", "--kubeconfig", dest="config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)
    apply.add_parser(sub, [common])
    get.add_parser(sub, [common])
    describe.add_parser(sub, [common])
    delete.add_parser(sub, [common])
    create.add_parser(sub, [common])
    scale.add_parser(sub, [common])
    hollow_nodes.register(sub, [common])
    images.register(sub, [common])
    rollout.register(sub, [common])
    set_image.register(sub, [common])
    logs.register(sub, [common])
    exec_command.register(sub, [common])
    cluster.add_parsers(sub, [common])
    v = sub.add_parser("version", parents=[common], help="print the client version (and the server's address)")
    v.add_argument("--client", action="store_true", help="only the client version")
    v.set_defaults(run=_run_version)
    return parser


async def _run_version(args: argparse.Namespace) -> int:
    print(f"Client Version: {_version()}")
    if args.client:
        return 0
    from kubeling.config import load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"Server: not configured ({e})")
        return 0
    if await cluster.api_answers(cfg.server, timeout=5.0):
        print(f"Server Address: {cfg.server}")
    else:
        print(f"Server Address: {cfg.server} (not reachable)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # `kubeling get pods | head`: the reader left; stop quietly.
        _silence_stdout()
        code = 1
    if argv is None:
        sys.exit(code)
    return code


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "verb", None):
            parser.print_help(sys.stderr)
            return 1
        if args.namespace == "":
            raise CliError("a namespace must not be empty (-n NAME)")
        return asyncio.run(args.run(args))
    except KeyboardInterrupt:
        sys.stdout.flush()
        if args is not None and getattr(args, "watch_mode", False):
            return 0  # like kubectl: Ctrl-C is how a watch ends
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except CliError as e:
        _flush()
        lines = str(e).splitlines() or ["unknown error"]
        print(f"error: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(line, file=sys.stderr)
        return 1
    except ServerErrors as e:
        _flush()
        for line in e.lines:
            print(line, file=sys.stderr)
        return 1
    except ApiError as e:
        _flush()
        print(format_api_error(e), file=sys.stderr)
        return 1
    except ConfigError as e:
        _flush()
        print(f"error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except OSError as e:
        _flush()
        where = f" {e.filename}:" if getattr(e, "filename", None) else ""
        print(f"error:{where} {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a bug, but still one line unless asked
        if os.environ.get("KUBELING_DEBUG"):
            raise
        _flush()
        print(f"error: internal error: {type(e).__name__}: {e} "
              f"(run with KUBELING_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


def _flush() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    main()
