"""The `ndmpd` command: run the server and manage its catalog, users and tape images.

Every failure a user can cause ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from ndmpd import __version__
from ndmpd.catalog.config import Config, load_config
from ndmpd.catalog.errors import CatalogError, ConfigError, DataPathError
from ndmpd.catalog.store import Catalog, FirstStart

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A user-facing failure of a command (exit status 2)."""


Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except (ConfigError, CatalogError, DataPathError, CliError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`); keep Python from complaining at exit.
        _silence_stdout()
        return EXIT_OK
    except OSError as exc:
        return _fail(_os_error(exc))
    except Exception as exc:
        if os.environ.get("NDMPD_DEBUG"):
            traceback.print_exc()
        return _fail(f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)


# ---------------------------------------------------------------------------------------------
# Parser


def _build_parser() -> argparse.ArgumentParser:
    # SUPPRESS keeps a subcommand's unset option from hiding one given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML configuration file (default: the embedded default)",
    )
    common.add_argument(
        "--state-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="state directory (overrides state_dir of the configuration)",
    )
    parser = argparse.ArgumentParser(
        prog="ndmpd",
        description="NDMP version 4 server with an ONTAP-compatible REST management API.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"ndmpd {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="run the NDMP and REST servers")
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser("config", parents=[common], help="show the configuration")
    config_sub = p.add_subparsers(title="config commands", metavar="COMMAND")
    p.set_defaults(handler=_help_of(p))
    q = config_sub.add_parser("show", parents=[common], help="print the effective configuration")
    q.set_defaults(handler=_cmd_config_show)

    p = sub.add_parser("user", parents=[common], help="manage REST (and NDMP) users")
    user_sub = p.add_subparsers(title="user commands", metavar="COMMAND")
    p.set_defaults(handler=_help_of(p))
    q = user_sub.add_parser("add", parents=[common], help="add a user")
    q.add_argument("name", metavar="NAME")
    q.add_argument("--role", required=True, choices=("admin", "readonly"))
    q.add_argument("--svm", metavar="SVM", help="scope the user to one SVM (default: cluster)")
    q.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (else prompt)",
    )
    q.set_defaults(handler=_cmd_user_add)
    q = user_sub.add_parser("list", parents=[common], help="list users")
    q.set_defaults(handler=_cmd_user_list)
    q = user_sub.add_parser("remove", parents=[common], help="remove a user")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(handler=_cmd_user_remove)

    p = sub.add_parser(
        "password", parents=[common], help="print a user's generated NDMP password for an SVM"
    )
    p.add_argument("user", metavar="USER")
    p.add_argument("--svm", metavar="SVM", required=True)
    p.set_defaults(handler=_cmd_password)

    p = sub.add_parser("tape", parents=[common], help="virtual tape images")
    tape_sub = p.add_subparsers(title="tape commands", metavar="COMMAND")
    p.set_defaults(handler=_help_of(p))
    q = tape_sub.add_parser(
        "export", parents=[common], help="write the raw bytes of one tape file of a drive"
    )
    q.add_argument("drive", metavar="DRIVE")
    q.add_argument(
        "--file", dest="file_number", metavar="N", type=_file_number, required=True,
        help="tape file number, counted from 0 as NDMP counts",
    )  # fmt: skip
    q.add_argument("-o", "--output", metavar="OUT", required=True, help="output file, - = stdout")
    q.set_defaults(handler=_cmd_tape_export)

    # --- sessions: placeholder until the REST client lands (later task) ----------------------
    p = sub.add_parser("sessions", parents=[common], help="list, show or kill NDMP sessions")
    sessions_sub = p.add_subparsers(title="sessions commands", metavar="COMMAND")
    p.set_defaults(handler=_cmd_sessions)
    q = sessions_sub.add_parser("list", parents=[common], help="list sessions")
    q.set_defaults(handler=_cmd_sessions)
    for name, text in (("show", "show one session"), ("kill", "kill one session")):
        q = sessions_sub.add_parser(name, parents=[common], help=text)
        q.add_argument("id", metavar="ID")
        q.set_defaults(handler=_cmd_sessions)
    return parser


def _file_number(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a tape file number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"tape file numbers start at 0, got {value}")
    return value


def _help_of(parser: argparse.ArgumentParser) -> Handler:
    def show_help(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return EXIT_USAGE

    return show_help


# ---------------------------------------------------------------------------------------------
# Shared steps


def _config(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None), getattr(args, "state_dir", None))


def _catalog(config: Config) -> Catalog:
    """Open and synchronise the catalog; if this is the very first start, say what was made."""
    catalog = Catalog(config.state_dir)
    first = catalog.initialize(config)
    if first is not None:
        _print_first_start(config, first)
    return catalog


def _print_first_start(config: Config, first: FirstStart) -> None:
    admin_pw = (
        "(from NDMPD_ADMIN_PASSWORD)" if first.admin_password_from_env else first.admin_password
    )
    err = sys.stderr
    print(f"ndmpd: initialised the state directory {config.state_dir}", file=err)
    print(f"  REST user {first.admin_user!r} (admin), password: {admin_pw}", file=err)
    print(
        f"  NDMP user {first.ndmp_user!r} for SVM {first.ndmp_svm!r}, password: "
        f"{first.ndmp_password}",
        file=err,
    )


def _fail(message: str, status: int = EXIT_USAGE) -> int:
    try:
        print(f"ndmpd: error: {message}", file=sys.stderr)
    except OSError:
        pass
    return status


def _os_error(exc: OSError) -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _console() -> object:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


# ---------------------------------------------------------------------------------------------
# Commands


def _cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    # serve() calls catalog.initialize() itself: it prints the first-start secrets with the URLs.
    catalog = Catalog(config.state_dir)
    try:
        from ndmpd.server.app import serve
    except ImportError as exc:
        raise CliError(f"the server is not available in this installation: {exc}") from None
    try:
        return int(serve(config, catalog) or 0)
    finally:
        catalog.close()


def _cmd_config_show(args: argparse.Namespace) -> int:
    sys.stdout.write(_config(args).to_toml())
    sys.stdout.flush()
    return EXIT_OK


def _read_new_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise CliError("no password on standard input")
        return password
    try:
        first = getpass.getpass("Password: ")
        second = getpass.getpass("Password (again): ")
    except EOFError:
        raise CliError("no password given (use --password-stdin to pipe one)") from None
    if first != second:
        raise CliError("the passwords do not match")
    return first


def _cmd_user_add(args: argparse.Namespace) -> int:
    config = _config(args)
    with _catalog(config) as catalog:
        if args.svm is not None and config.svm(args.svm) is None:
            raise CliError(f"unknown SVM {args.svm!r} (not in the configuration)")
        if catalog.get_user(args.name) is not None:
            raise CliError(f"user {args.name!r} already exists")
        password = _read_new_password(args.password_stdin)
        user = catalog.add_user(args.name, args.role, args.svm, password)
    scope = f"SVM {user.svm!r}" if user.svm else "the cluster"
    print(f"added user {user.name!r} ({user.role}) for {scope}")
    return EXIT_OK


def _cmd_user_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    with _catalog(_config(args)) as catalog:
        users = catalog.list_users()
    table = Table("name", "role", "svm", title=None, show_lines=False)
    for user in users:
        table.add_row(user.name, user.role, user.svm or "-", style=None)
    console = _console()
    console.print(table)  # type: ignore[attr-defined]
    return EXIT_OK


def _cmd_user_remove(args: argparse.Namespace) -> int:
    with _catalog(_config(args)) as catalog:
        catalog.remove_user(args.name)
    print(f"removed user {args.name!r}")
    return EXIT_OK


def _cmd_password(args: argparse.Namespace) -> int:
    with _catalog(_config(args)) as catalog:
        password = catalog.ndmp_password(args.user, args.svm)
    print(password)
    return EXIT_OK


def _cmd_tape_export(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.tape(args.drive) is None:
        known = ", ".join(t.name for t in config.tapes) or "none"
        raise CliError(f"unknown drive {args.drive!r} (configured drives: {known})")
    try:
        from ndmpd.tapes import image_path
        from ndmpd.tapes.export import export_file
    except ImportError as exc:
        raise CliError(f"tape export is not available in this installation: {exc}") from None
    image = Path(image_path(config.state_dir, args.drive))
    if not image.exists():
        raise CliError(f"drive {args.drive!r} has no tape image yet ({image})")

    def run(out: BinaryIO) -> int:
        try:
            return int(export_file(image, args.file_number, out))
        except (CliError, OSError):
            raise
        except (ValueError, LookupError, EOFError) as exc:
            raise CliError(f"{args.drive} file {args.file_number}: {exc}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("ndmpd."):
                raise CliError(f"{args.drive} file {args.file_number}: {exc}") from None
            raise

    if args.output == "-":
        out = sys.stdout.buffer
        count = run(out)
        out.flush()
        return EXIT_OK
    count = _export_to_file(Path(args.output), run)
    print(f"{args.drive} file {args.file_number}: {count} bytes -> {args.output}", file=sys.stderr)
    return EXIT_OK


def _export_to_file(target: Path, run: Callable[[BinaryIO], int]) -> int:
    """Write beside the target and rename, so a failed export never leaves a truncated file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "xb") as out:
            count = run(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return count


def _cmd_sessions(args: argparse.Namespace) -> int:
    # Placeholder: `ndmpd sessions list|show ID|kill ID` will talk to the REST API of a running
    # server (GET/DELETE /api/protocols/ndmp/sessions) once the REST client exists.
    _config(args)
    raise CliError("sessions: not available yet")
