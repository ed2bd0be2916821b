"""SQL the two supported databases spell differently, and the hot path's driver-level runner."""
from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from psycopg.rows import namedtuple_row

from app.extensions import db


def insert_unless_exists(table: sa.Table, *conflict_columns: str) -> "DriverStatement":
    """INSERT … ON CONFLICT (conflict_columns) DO NOTHING RETURNING id: a row whose
    unique key is already taken is skipped, not an error (no id comes back).
    Run it with the row's values: `insert_unless_exists(t, "key").execute(row)`."""
    return _insert_unless_exists(db.engine.dialect.name, table, conflict_columns)


@lru_cache(maxsize=None)
def _insert_unless_exists(dialect_name: str, table: sa.Table, conflict_columns: tuple):
    # Built once: constructing a statement costs more than running a cached one.
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return DriverStatement(dialect.insert(table)
                           .on_conflict_do_nothing(index_elements=list(conflict_columns))
                           .returning(table.c.id))


class DriverStatement:
    """A Core statement that runs straight on the driver's cursor on PostgreSQL.

    Why: one webhook delivery runs about fifteen small statements, and SQLAlchemy's
    execution machinery costs more CPU per statement (about 0.25 ms on the project
    machine) than PostgreSQL spends running it. So the statement is compiled once per
    set of parameter names and executed on the psycopg cursor:

    - binds go through the columns' own bind processors (JSONB, UTC timestamps) and
      Python-side defaults (`default=`, `onupdate=`) are filled in, so rows are
      written exactly as SQLAlchemy would write them;
    - driver errors go through SQLAlchemy's own handling, so callers still see
      IntegrityError / OperationalError and a dead connection is invalidated;
    - engine cursor events still fire, so profiling and statement counts see it.

    Rows come back as psycopg returns them (aware timestamps, JSONB as dicts), with
    attribute access; no result processors run. Other databases (SQLite, for
    development) run the statement through SQLAlchemy as usual.

    It leans on three SQLAlchemy internals (`SQLCompiler._bind_processors`,
    `Connection._handle_dbapi_exception`, `_has_events`); tests/test_driver_statements.py
    proves each behaviour, so an upgrade that changes them fails there first.
    """

    def __init__(self, statement):
        self.statement = statement
        self._compiled: dict = {}

    def execute(self, params: dict | None = None, *, connection: sa.Connection | None = None):
        """Run once, on `connection` or else in the session's transaction; returns
        something with first(), one(), scalar() and scalar_one()."""
        params = params or {}
        connection = connection if connection is not None else _session_connection()
        if connection.dialect.name != "postgresql":
            return connection.execute(self.statement, params)
        sql, prepare = self._compile(connection.dialect, params)
        return _Rows(_run(connection, sql, prepare(params), many=False))

    def executemany(self, rows: list[dict], *, connection: sa.Connection | None = None) -> None:
        """Run once per row (same parameter names in every row), results discarded."""
        if not rows:
            return
        connection = connection if connection is not None else _session_connection()
        if connection.dialect.name != "postgresql":
            connection.execute(self.statement, rows)
            return
        sql, prepare = self._compile(connection.dialect, rows[0])
        _run(connection, sql, [prepare(row) for row in rows], many=True)

    def _compile(self, dialect, params: dict):
        names = frozenset(params)
        found = self._compiled.get(names)
        if found is None:
            found = self._compiled[names] = _compile(self.statement, dialect, names)
        return found


def _session_connection() -> sa.Connection:
    """The session's connection, with pending ORM changes flushed first, as
    `session.execute` would: a statement must see (and lock after) them."""
    if db.session.autoflush:
        db.session.flush()
    return db.session.connection()


def _compile(statement, dialect, names: frozenset):
    compiled = statement.compile(dialect=dialect, column_keys=sorted(names))
    processors = compiled._bind_processors
    fixed, required = {}, []
    for bind, name in compiled.bind_names.items():
        if bind.expanding:
            raise ValueError(f"{name}: IN with a list cannot run on the driver; "
                             f"compare with each value instead")
        if not bind.required and name not in names:
            fixed[name] = bind.effective_value
        elif name in names:
            required.append(name)
    defaults = [(column.key, column.default) for column in compiled.insert_prefetch]
    defaults += [(column.key, column.onupdate) for column in compiled.update_prefetch]

    def prepare(params: dict) -> dict:
        values = {**fixed, **{name: params[name] for name in required}}
        for key, default in defaults:
            if key not in params:
                values[key] = default.arg(None) if default.is_callable else default.arg
        for name, process in processors.items():
            if name in values:
                values[name] = process(values[name])
        return values

    return compiled.string, prepare


def _run(connection: sa.Connection, sql: str, params, *, many: bool):
    events = connection._has_events or connection.engine._has_events
    cursor = connection.connection.driver_connection.cursor(row_factory=namedtuple_row)
    try:
        if events:
            connection.dispatch.before_cursor_execute(connection, cursor, sql, params, None, many)
        if many:
            cursor.executemany(sql, params)
            rows = []
        else:
            cursor.execute(sql, params)
            rows = cursor.fetchall() if cursor.description is not None else []
        if events:
            connection.dispatch.after_cursor_execute(connection, cursor, sql, params, None, many)
        return rows
    except connection.dialect.loaded_dbapi.Error as exc:
        # Raises the matching SQLAlchemy error; a lost connection is invalidated.
        connection._handle_dbapi_exception(exc, sql, params, cursor, None)
        raise  # not reached
    finally:
        cursor.close()


class _Rows:
    """The few Result methods the hot path uses, over a list of driver rows."""

    __slots__ = ("rows",)

    def __init__(self, rows: list):
        self.rows = rows

    def first(self):
        return self.rows[0] if self.rows else None

    def one(self):
        if len(self.rows) != 1:
            raise (sa.exc.NoResultFound("No row was found") if not self.rows else
                   sa.exc.MultipleResultsFound("Multiple rows were found"))
        return self.rows[0]

    def scalar(self):
        return self.rows[0][0] if self.rows else None

    def scalar_one(self):
        return self.one()[0]
