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
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from ndmpd import __version__
from ndmpd.catalog.config import Config, load_config
from ndmpd.catalog.errors import CatalogError, ConfigError, DataPathError
from ndmpd.catalog.store import Catalog, FirstStart

if TYPE_CHECKING:
    from ndmpd.rest.client import RestClient

_T = TypeVar("_T")

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

    # --- sessions: ONTAP's probe and kill, over the REST API of a running server ---------------
    rest = argparse.ArgumentParser(add_help=False)
    rest.add_argument(
        "--url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="REST API base URL (default: from the configuration's [rest] listen and tls)",
    )
    rest.add_argument(
        "--user",
        metavar="USER",
        default=argparse.SUPPRESS,
        help="REST user (default: admin); the password comes from NDMPD_REST_PASSWORD or a prompt",
    )
    p = sub.add_parser(
        "sessions", parents=[common, rest], help="list, show or kill NDMP sessions (REST API)"
    )
    sessions_sub = p.add_subparsers(title="sessions commands", metavar="COMMAND")
    p.set_defaults(handler=_cmd_sessions_list)
    q = sessions_sub.add_parser("list", parents=[common, rest], help="list sessions (probe)")
    q.add_argument(
        "--watch", action="store_true", help="refresh until interrupted, with transfer rates"
    )
    q.add_argument(
        "--interval", metavar="S", type=_interval, default=2.0,
        help="seconds between refreshes with --watch (default 2)",
    )  # fmt: skip
    q.add_argument(
        "--count", metavar="N", type=_positive_int, default=None,
        help="with --watch: stop after N refreshes",
    )  # fmt: skip
    q.add_argument("--json", action="store_true", help="print the records as JSON")
    q.set_defaults(handler=_cmd_sessions_list)
    q = sessions_sub.add_parser(
        "show", parents=[common, rest], help="show every field of one session"
    )
    q.add_argument("id", metavar="ID", help="session id, or OWNER/ID")
    q.add_argument("--json", action="store_true", help="print the record as JSON")
    q.set_defaults(handler=_cmd_sessions_show)
    q = sessions_sub.add_parser("kill", parents=[common, rest], help="kill one session")
    q.add_argument("id", metavar="ID", help="session id, or OWNER/ID")
    q.set_defaults(handler=_cmd_sessions_kill)
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


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.05 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"the interval must be 0.05..3600 s, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _rest_client(args: argparse.Namespace) -> RestClient:
    """A client for the server of this configuration (or `--url`), password never from argv."""
    from ndmpd.rest.client import RestClient, RestError, endpoint_from_config

    config = _config(args)
    try:
        endpoint = endpoint_from_config(config, getattr(args, "url", None))
    except RestError as exc:
        raise CliError(str(exc)) from None
    user = getattr(args, "user", None) or "admin"
    password = os.environ.get("NDMPD_REST_PASSWORD")
    if password is None:
        # Prompt only a person at a terminal; a script without the variable fails at once.
        if not sys.stdin.isatty():
            raise CliError("no REST password: set NDMPD_REST_PASSWORD (no terminal to prompt on)")
        try:
            password = getpass.getpass(f"REST password for {user} at {endpoint.url}: ")
        except EOFError:
            raise CliError("no REST password given") from None
    try:
        return RestClient(endpoint, user, password)
    except RestError as exc:
        raise CliError(str(exc)) from None


def _rest_call(call: Callable[[], _T]) -> _T:
    from ndmpd.rest.client import RestError

    try:
        return call()
    except RestError as exc:
        raise CliError(str(exc)) from None


def _human_bytes(n: object) -> str:
    if not isinstance(n, int):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _session_bytes(rec: dict) -> int | None:
    """The bytes a session has moved: the data side's count, or the mover's, whichever is larger
    (a LOCAL session has both, a 3-way session one each)."""
    counts = [
        v
        for v in (
            (rec.get("data") or {}).get("bytes_processed"),
            (rec.get("mover") or {}).get("bytes_moved"),
        )
        if isinstance(v, int)
    ]
    return max(counts) if counts else None


def _session_key(rec: dict) -> str:
    return f"{rec.get('uuid', '?')}/{rec.get('id', '?')}"


def _session_sort_key(rec: dict) -> tuple[int, str]:
    sid = str(rec.get("id", ""))
    head = sid.split(":", 1)[0]
    return (int(head) if head.isdigit() else 1 << 62, sid)


def _session_owner(rec: dict) -> str:
    svm = (rec.get("svm") or {}).get("name")
    node = (rec.get("node") or {}).get("name")
    return str(svm or node or rec.get("uuid") or "-")


def _session_engine(rec: dict) -> str:
    engine = rec.get("backup_engine")
    if engine:
        return str(engine)
    # Tar sessions leave `backup_engine` out (the ONTAP enum has no tar) and name it elsewhere.
    for key, value in rec.items():
        if "engine" in key and isinstance(value, str) and value:
            return value
    return "-"


def _session_state(part: object) -> str:
    if not isinstance(part, dict) or not part.get("state"):
        return "-"
    state = str(part["state"])
    reason = part.get("reason")
    if state in ("halted", "paused") and reason and reason != "not_available":
        return f"{state} ({reason})"
    return state


def _sessions_table(
    records: list[dict], rates: dict[str, float | None] | None = None, title: str | None = None
) -> object:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for name in ("id", "owner", "client", "operation", "engine", "data path", "tape", "data",
                 "mover"):  # fmt: skip
        table.add_column(name, no_wrap=name in ("id", "client"))
    table.add_column("bytes", justify="right", no_wrap=True)
    if rates is not None:
        table.add_column("rate", justify="right", no_wrap=True)
    for rec in sorted(records, key=_session_sort_key):
        data = rec.get("data") or {}
        client = rec.get("client_address")
        port = rec.get("client_port")
        row = [
            str(rec.get("id", "-")),
            _session_owner(rec),
            f"{client}:{port}" if client and port is not None else str(client or "-"),
            str(data.get("operation") or "-"),
            _session_engine(rec),
            str(rec.get("data_path") or "-"),
            str(rec.get("tape_device") or "-"),
            _session_state(data),
            _session_state(rec.get("mover")),
            _human_bytes(_session_bytes(rec)),
        ]
        if rates is not None:
            rate = rates.get(_session_key(rec))
            row.append("-" if rate is None else f"{_human_bytes(round(rate))}/s")
        table.add_row(*row)
    return table


def _print_json(value: object) -> None:
    import json

    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def _cmd_sessions_list(args: argparse.Namespace) -> int:
    with _rest_client(args) as client:
        if getattr(args, "watch", False):
            return _watch_sessions(client, args.interval, args.count)
        records = _rest_call(lambda: client.sessions("*"))
    if getattr(args, "json", False):
        _print_json(records)
        return EXIT_OK
    console = _console()
    if not records:
        print("no NDMP sessions")
        return EXIT_OK
    console.print(_sessions_table(records))  # type: ignore[attr-defined]
    return EXIT_OK


def _watch_sessions(client: RestClient, interval: float, count: int | None) -> int:
    """Refresh the table; rates are bytes moved between two refreshes over the time between."""
    import time

    from rich.live import Live

    console = _console()
    previous: dict[str, tuple[float, int]] = {}
    live: Live | None = None
    if console.is_terminal:  # type: ignore[attr-defined]
        live = Live(console=console, auto_refresh=False)  # type: ignore[arg-type]
        live.start()
    done = 0
    try:
        while True:
            records = _rest_call(lambda: client.sessions("*"))
            now = time.monotonic()
            rates: dict[str, float | None] = {}
            current: dict[str, tuple[float, int]] = {}
            for rec in records:
                key = _session_key(rec)
                moved = _session_bytes(rec)
                if moved is None:
                    rates[key] = None
                    continue
                current[key] = (now, moved)
                before = previous.get(key)
                if before is not None and now > before[0] and moved >= before[1]:
                    rates[key] = (moved - before[1]) / (now - before[0])
                else:
                    rates[key] = None
            previous = current
            title = f"NDMP sessions at {time.strftime('%H:%M:%S')}: {len(records)}"
            table = _sessions_table(records, rates, title)
            if live is not None:
                live.update(table, refresh=True)  # type: ignore[arg-type]
            else:
                console.print(table)  # type: ignore[attr-defined]
                sys.stdout.flush()
            done += 1
            if count is not None and done >= count:
                return EXIT_OK
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if live is not None:
            live.stop()


def _session_details(rec: dict) -> list[tuple[str, str]]:
    """Every field of a record, flattened to dotted names, links left out."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key in sorted(value):
                if key != "_links":
                    walk(f"{prefix}.{key}" if prefix else key, value[key])
        elif isinstance(value, list):
            rows.append((prefix, ", ".join(map(str, value)) or "-"))
        elif isinstance(value, int) and not isinstance(value, bool) and "bytes" in prefix:
            rows.append((prefix, f"{value} ({_human_bytes(value)})"))
        else:
            rows.append((prefix, "-" if value is None or value == "" else str(value)))

    first = ("id", "uuid", "svm", "node")
    for key in first:
        if key in rec:
            walk(key, rec[key])
    walk("", {k: v for k, v in rec.items() if k not in first})
    return rows


def _cmd_sessions_show(args: argparse.Namespace) -> int:
    with _rest_client(args) as client:
        rec = _rest_call(lambda: client.resolve(args.id))
    if args.json:
        _print_json(rec)
        return EXIT_OK
    from rich.table import Table

    table = Table("field", "value", title=f"NDMP session {_session_key(rec)}", title_justify="left")
    for name, value in _session_details(rec):
        table.add_row(name, value)
    _console().print(table)  # type: ignore[attr-defined]
    return EXIT_OK


def _cmd_sessions_kill(args: argparse.Namespace) -> int:
    with _rest_client(args) as client:
        rec = _rest_call(lambda: client.resolve(args.id))
        owner, sid = str(rec.get("uuid", "")), str(rec.get("id", ""))
        if not owner or not sid:
            raise CliError(f"the server's record for {args.id} has no uuid/id to address it by")
        _rest_call(lambda: client.kill(owner, sid))
    data = rec.get("data") or {}
    what = []
    if data.get("operation") and data.get("operation") != "none":
        what.append(f"{data['operation']} of {rec.get('data_path') or '-'}")
    if rec.get("tape_device"):
        what.append(f"tape {rec['tape_device']}")
    client_addr = rec.get("client_address")
    peer = f" from {client_addr}:{rec.get('client_port')}" if client_addr else ""
    detail = f" ({', '.join(what)})" if what else ""
    print(f"killed session {sid} of {_session_owner(rec)} [{owner}/{sid}]{peer}{detail}")
    return EXIT_OK
