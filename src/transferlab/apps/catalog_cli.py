"""`transferlab users ...` and `transferlab catalog ...`: the catalog's accounts and its backups,
from the shell. Thin skins over :mod:`.serve.accounts` and :mod:`.serve.backup`; registered on the
main CLI by :mod:`.cli`. Errors are :class:`~transferlab.errors.TransferlabError` (exit 2).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import TransferlabError

users_app = typer.Typer(no_args_is_help=True, help="Accounts of the catalog web app: add, list, remove, passwd, token.")
catalog_app = typer.Typer(no_args_is_help=True, help="Back up and restore the catalog web app's database and photos.")


class RoleChoice(str, Enum):
    admin = "admin"
    staff = "staff"
    volunteer = "volunteer"


DbOpt = Annotated[str, typer.Option("--db", metavar="PATH|URL",
                                    help="The catalog: SQLite file, or postgresql://user@host/dbname.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="User name.", show_default=False)]
ACTOR = "cli"  # who the audit log names for changes made from the shell


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _accounts(db: str):
    try:
        from .serve.accounts import open_accounts
    except ImportError as e:
        raise TransferlabError(f"accounts need the web extras: pip install 'transferlab[serve]' ({e.name} is "
                               "missing)") from None
    return open_accounts(db)


def read_password(confirm: bool = True) -> str:
    """From a hidden prompt on a terminal; else the first line of stdin (for scripts:
    ``echo "$PW" | transferlab users add ...``)."""
    if sys.stdin is not None and sys.stdin.isatty():
        return typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise TransferlabError("no password: type it at the prompt, or send it on stdin")
    return line.rstrip("\r\n")


@users_app.command("add")
def users_add(name: NameArg,
              role: Annotated[RoleChoice, typer.Option("--role", help="What the user may do.")] = RoleChoice.volunteer,
              db: DbOpt = "catalog.sqlite") -> None:
    """Add a user. volunteer: identify, add, browse; staff: also edit, delete, CSV; admin: also users, audit."""
    acc = _accounts(db)
    try:
        name = acc.add(name, role.value, read_password(), actor=ACTOR)
    finally:
        acc.close()
    _out(f"added {name} ({role.value})")


@users_app.command("list")
def users_list(db: DbOpt = "catalog.sqlite") -> None:
    """Users, their roles and how many sessions and tokens each has."""
    acc = _accounts(db)
    try:
        rows = acc.list()
    finally:
        acc.close()
    if not rows:
        _out("no users: `serve` is open on 127.0.0.1 only, and refuses a wider --host")
    for u in rows:
        _out(f"{u.name}\t{u.role}\tadded {u.created_at:%Y-%m-%d}\t{u.sessions} session(s)\t{u.tokens} token(s)")


@users_app.command("remove")
def users_remove(name: NameArg, db: DbOpt = "catalog.sqlite") -> None:
    """Remove a user; their sessions and tokens stop working at once, in running servers too."""
    acc = _accounts(db)
    try:
        acc.remove(name, actor=ACTOR)
    finally:
        acc.close()
    _out(f"removed {name}")


@users_app.command("passwd")
def users_passwd(name: NameArg, db: DbOpt = "catalog.sqlite") -> None:
    """Set a new password (prompt, or stdin); the user's login sessions end."""
    acc = _accounts(db)
    try:
        acc.set_password(name, read_password(), actor=ACTOR)
    finally:
        acc.close()
    _out(f"password changed for {name}")


@users_app.command("token")
def users_token(name: NameArg, db: DbOpt = "catalog.sqlite") -> None:
    """Print a new API token for scripts (`Authorization: Bearer TOKEN`). It is shown only now:
    the catalog keeps only its hash."""
    acc = _accounts(db)
    try:
        token = acc.token(name, actor=ACTOR)
    finally:
        acc.close()
    _out(token)


@catalog_app.command("backup")
def catalog_backup(out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", show_default=False,
                                                     help="New folder for the backup (must not exist).")],
                   db: DbOpt = "catalog.sqlite",
                   media: Annotated[Path | None, typer.Option("--media", metavar="DIR",
                                                              help="Photo folder (default: next to a SQLite --db).")
                                    ] = None) -> None:
    """A consistent copy of the catalog and its photos, safe while `serve` runs."""
    from .serve.backup import backup

    r = backup(db, out, media=media)
    _out(f"backed up {r.pets} pet(s), {r.photos} photo(s), {r.users} user(s) to {r.path}")
    for line in r.notes:
        sys.stderr.write(f"note: {line}\n")


@catalog_app.command("restore")
def catalog_restore(backup_dir: Annotated[Path, typer.Argument(metavar="DIR", show_default=False,
                                                               help="A folder made by `catalog backup`.")],
                    db: DbOpt,
                    media: Annotated[Path | None, typer.Option("--media", metavar="DIR",
                                                               help="Photo folder (default: next to a SQLite --db).")
                                     ] = None) -> None:
    """Restore a backup into a NEW catalog, after checking it; never overwrites one."""
    from .serve.backup import restore

    r = restore(backup_dir, db, media=media)
    _out(f"restored {r.pets} pet(s), {r.photos} photo(s), {r.users} user(s) into {r.path}: integrity check passed")
