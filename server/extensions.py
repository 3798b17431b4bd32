"""Extensions, created unbound here and bound to the app in ``create_app``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import CursorResult, MetaData, bindparam, insert
from sqlalchemy.orm import DeclarativeBase, make_transient_to_detached

# Constraint names are stable across databases so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
babel = Babel()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])

# Flask-SQLAlchemy builds ``db.Model`` at run time; give type checkers the
# declarative base it is built from.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model


def rows_changed(statement: Any) -> int:
    """Run an UPDATE or DELETE in the current session; how many rows it changed."""
    result = cast("CursorResult[Any]", db.session.execute(statement))
    return int(result.rowcount or 0)


# Called with (table, rows) after each COPY of ``bulk_insert`` (the INSERT path goes
# through the session and its events): server.public.changes records the cases.
BULK_INSERT_LISTENERS: list[Callable[[Any, list[dict[str, Any]]], None]] = []


def bulk_insert(model: Any, rows: list[dict[str, Any]], stored: tuple[str, ...] = ()) -> None:
    """Insert many rows in the current transaction: COPY on PostgreSQL (one round trip,
    about twice as fast as a multi-row INSERT for 1,000 rows), executemany elsewhere.
    Every value goes through its column type first (encryption, enums, money), except
    in the columns named in ``stored``, whose values the caller gives as stored (already
    encrypted, say)."""
    if not rows:
        return
    import psycopg
    from psycopg import sql

    connection = db.session.connection()
    driver = connection.connection.driver_connection
    table = model.__table__
    names = list(rows[0])
    if not isinstance(driver, psycopg.Connection):
        if not stored:
            db.session.execute(insert(model), rows)
            return
        # A stored value is bound as it is (the type's storage type), the others through
        # their column type; the parameters are named p0, p1, ... (a bindparam may not
        # take a column's own name in VALUES).
        params = {
            name: bindparam(
                f"p{index}",
                type_=table.c[name].type.impl if name in stored else table.c[name].type,
            )
            for index, name in enumerate(names)
        }
        db.session.execute(
            insert(table).values(params),
            [{f"p{index}": row[name] for index, name in enumerate(names)} for row in rows],
        )
        return

    processors = [
        None if name in stored else table.c[name].type._cached_bind_processor(connection.dialect)
        for name in names
    ]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(
                [
                    process(row[name]) if process is not None else row[name]
                    for name, process in zip(names, processors, strict=True)
                ]
            )
    for listener in BULK_INSERT_LISTENERS:
        listener(table, rows)


def insert_as_loaded(objects: list[Any], statement: Any = None) -> list[Any]:
    """Write new objects of one mapped class with one INSERT (no unit of work) and make
    them the session's persistent objects, as if loaded: for a hot path, where a flush
    costs more Python than the statement. Every column is written as the object holds
    it; a column left unset or None takes its Python default (as a flush would), else
    NULL; nothing is read back but the ids. Relationships are not followed: the caller
    sets foreign keys, and appends related new objects after this (they then flush).

    ``statement``: an INSERT of the class's table RETURNING its id, to write with (say
    ``ON CONFLICT DO NOTHING``): for one object only, which is returned only if its row
    was written. The session's events for a Core statement run (do_orm_execute).
    """
    if not objects:
        return []
    table = type(objects[0]).__table__
    if statement is None:
        statement = _insert_returning_ids(table)
    elif len(objects) != 1:
        raise ValueError("a caller's statement writes one object")
    rows = []
    for obj in objects:
        row = {}
        for column in table.columns:
            if column.primary_key:
                continue
            value = obj.__dict__.get(column.key)
            if value is None and column.default is not None:
                default = column.default
                if not (default.is_scalar or default.is_callable):
                    # A SQL expression or a sequence: only a flush can write it.
                    raise ValueError(f"{column} has a default that is not a Python value")
                value = default.arg(None) if default.is_callable else default.arg
            if column.key not in obj.__dict__ or obj.__dict__[column.key] is not value:
                setattr(obj, column.key, value)
            row[column.key] = value
        rows.append(row)
    session = db.session()
    ids = session.execute(statement, rows).scalars().all()
    if len(ids) != len(objects):
        return []  # the one row was not written (ON CONFLICT DO NOTHING)
    for obj, new_id in zip(objects, ids, strict=True):
        obj.id = new_id
        make_transient_to_detached(obj)
        session.add(obj)
    return objects


@functools.cache
def _insert_returning_ids(table: Any) -> Any:
    """INSERT into ``table`` RETURNING the ids in the rows' order, built once a table."""
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)
