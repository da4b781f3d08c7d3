"""Account changes as the CLI (`transferlab users ...`) and the admin page make them: each one
done by :class:`.users.UserStore` and written to the audit log.

    accounts = open_accounts("catalog.sqlite")
    accounts.add("maria", "staff", password, actor="cli")
    token = accounts.token("maria", actor="cli")
"""

from __future__ import annotations

from .audit import AuditLog
from .db import make_engine, public_url
from .schema import init_schema
from .settings import ServeError, Settings
from .users import UserInfo, UserStore, check_role, clean_user_name


class Accounts:
    def __init__(self, users: UserStore, audit: AuditLog):
        self.users = users
        self.audit = audit

    def add(self, name: str, role: str, password: str, actor: str | None = None) -> str:
        name = self.users.add(name, role, password)
        self.audit.record("user.add", f"user {name}", f"role {check_role(role)}", actor)
        return name

    def remove(self, name: str, actor: str | None = None) -> None:
        self.users.remove(name)
        self.audit.record("user.remove", f"user {name}", "sessions and tokens ended", actor)

    def set_password(self, name: str, password: str, actor: str | None = None) -> None:
        self.users.set_password(name, password)
        self.audit.record("user.passwd", f"user {name}", "password changed, sessions ended", actor)

    def token(self, name: str, actor: str | None = None) -> str:
        secret = self.users.new_token(clean_user_name(name))
        self.audit.record("user.token", f"user {name}", "new API token", actor)
        return secret

    def list(self) -> list[UserInfo]:
        return self.users.list()

    def close(self) -> None:
        self.users.engine.dispose()


def open_accounts(db: str) -> Accounts:
    """The accounts of the catalog at ``db`` (a SQLite path or a PostgreSQL URL), creating or
    upgrading its schema as `serve` would."""
    url = Settings(model="", db=db).db_url
    engine = make_engine(url)
    try:
        init_schema(engine)
    except ServeError:
        engine.dispose()
        raise
    except Exception as e:
        engine.dispose()
        raise ServeError(f"cannot open catalog {public_url(url)}: {str(e).splitlines()[0]}") from None
    return Accounts(UserStore(engine), AuditLog(engine))
