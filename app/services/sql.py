"""SQL the two supported databases spell differently."""
from __future__ import annotations

from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db


def insert_unless_exists(table: sa.Table, *conflict_columns: str):
    """INSERT … ON CONFLICT (conflict_columns) DO NOTHING RETURNING id: a row whose
    unique key is already taken is skipped, not an error (no id comes back).
    Execute it with the row's values as parameters."""
    return _insert_unless_exists(db.engine.dialect.name, table, conflict_columns)


@lru_cache(maxsize=None)
def _insert_unless_exists(dialect_name: str, table: sa.Table, conflict_columns: tuple):
    # Built once: constructing a statement costs more than running a cached one.
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return (dialect.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
            .returning(table.c.id))
