"""SQL the two supported databases spell differently."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.extensions import db


def insert_unless_exists(table: sa.Table, values: dict, *conflict_columns: str):
    """INSERT … ON CONFLICT (conflict_columns) DO NOTHING: a row whose unique key
    is already taken is skipped, not an error (add .returning() to learn which)."""
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    return (dialect.insert(table).values(values)
            .on_conflict_do_nothing(index_elements=list(conflict_columns)))
