"""Extensions, created unbound here and bound to the app in ``create_app``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import CursorResult, MetaData, bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import DeclarativeBase, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

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
    was written; the session's events for a Core statement run (do_orm_execute).
    Without one, this is :func:`write_as_loaded` of the objects.
    """
    if not objects:
        return []
    if statement is None:
        write_as_loaded(objects)
        return objects
    if len(objects) != 1:
        raise ValueError("a caller's statement writes one object")
    ids = db.session().execute(statement, [_column_values(objects[0])]).scalars().all()
    if not ids:
        return []  # the row was not written (ON CONFLICT DO NOTHING)
    _attach(objects, ids)
    return objects


# Called by write_as_loaded with what it writes: the rows it inserts, as [(table,
# rows)], and those it updates, as [(table, {"id": ..., changed columns...})]. Each
# returns more rows to write with them, as [(table, rows)]: server.public.changes names
# the changed cases (public_dirty) this way, as its flush hook would.
_Writes = list[tuple[Any, list[dict[str, Any]]]]
_Updates = list[tuple[Any, dict[str, Any]]]
WRITE_LISTENERS: list[Callable[[_Writes, _Updates], _Writes]] = []


def write_as_loaded(
    new: Sequence[Any] = (), changed: Sequence[tuple[Any, dict[str, Any]]] = ()
) -> None:
    """Write new objects (of any mapped classes) and changes to loaded ones without the
    unit of work, as one statement on PostgreSQL (data-modifying CTEs, one round trip)
    and a few on SQLite; afterwards the session holds them as a flush would have left
    them: the new objects persistent with their ids, the changed ones with the new
    values as committed (nothing to flush, nothing to read back). For a hot path whose
    rows are all known at once (a visit's flags, its case event and audit rows, the
    household's review dates): a flush costs more Python than the statement.

    New objects are written as :func:`insert_as_loaded` writes them (columns as held,
    else their Python defaults; relationships not followed: set foreign keys).
    ``changed``: (object, {attribute: value}) for persistent objects, each one UPDATE
    by id (no ``onupdate`` columns are run: a table that has them is refused). The
    session's flush and execute events do not see these statements:
    ``WRITE_LISTENERS`` do.
    """
    groups: dict[Any, list[Any]] = {}
    for obj in new:
        groups.setdefault(type(obj).__table__, []).append(obj)
    inserts = [(table, [_column_values(obj) for obj in objs]) for table, objs in groups.items()]
    updates: _Updates = []
    for obj, values in changed:
        table = type(obj).__table__
        if obj.id is None:
            raise ValueError(
                f"a {type(obj).__name__} that is not persistent has no id to update by"
            )
        if any(column.onupdate is not None for column in table.columns):
            raise ValueError(f"{table.name} has onupdate columns: only a flush writes them")
        unknown = [key for key in values if key == "id" or key not in table.c]
        if unknown:
            raise ValueError(f"{table.name} has no column to set for {unknown}")
        updates.append((table, {"id": obj.id, **values}))
    if not inserts and not updates:
        return
    extra = [pair for listener in WRITE_LISTENERS for pair in listener(inserts, updates)]
    writes = [*inserts, *[(table, rows) for table, rows in extra if rows]]
    connection = db.session().connection()
    write = _write_postgresql if connection.dialect.name == "postgresql" else _write_in_turn
    ids, counts = write(connection, writes, updates)
    for (_table, rows), got in zip(writes, ids, strict=True):
        if len(got) != len(rows):
            raise RuntimeError(f"{len(rows)} rows to insert, {len(got)} ids back")
    for (table, row), count in zip(updates, counts, strict=True):
        if count != 1:
            raise RuntimeError(f"{table.name} {row['id']}: {count} rows updated, not 1")
    for objs, got in zip(groups.values(), ids, strict=False):
        _attach(objs, got)
    for obj, values in changed:
        for key, value in values.items():
            set_committed_value(obj, key, value)


def _write_postgresql(
    connection: Any, writes: _Writes, updates: _Updates
) -> tuple[list[list[int]], Sequence[int]]:
    """One statement (see _written_together): each INSERT's ids, each UPDATE's count."""
    shape = (
        tuple((table, tuple(rows[0]), len(rows)) for table, rows in writes),
        tuple((table, tuple(row)) for table, row in updates),
    )
    params: dict[str, Any] = {}
    for i, (_table, rows) in enumerate(writes):
        columns = shape[0][i][1]
        for r, row in enumerate(rows):
            # By name: a listener's rows need not list their columns in one order.
            params.update({f"w{i}_{r}_{k}": row[name] for k, name in enumerate(columns)})
    for i, (_table, row) in enumerate(updates):
        params.update({f"u{i}_{k}": value for k, value in enumerate(row.values())})
    sql, processors = _written_together(shape, connection.dialect)
    for name, process in processors:
        params[name] = process(params[name])
    written = connection.exec_driver_sql(sql, params).one()
    return [list(written[i] or ()) for i in range(len(writes))], written[len(writes) :]


def _write_in_turn(
    connection: Any, writes: _Writes, updates: _Updates
) -> tuple[list[list[int]], Sequence[int]]:
    """SQLite: a statement a table (SQLAlchemy sends a row at a time where the ids'
    order needs it), then an UPDATE each."""
    ids = [
        list(connection.execute(_insert_returning_ids(table), rows).scalars())
        for table, rows in writes
    ]
    counts = [
        cast(
            "CursorResult[Any]",
            connection.execute(
                _update_by_id(table, tuple(row)),
                {f"p{k}": value for k, value in enumerate(row.values())},
            ),
        ).rowcount
        for table, row in updates
    ]
    return ids, counts


def _column_values(obj: Any) -> dict[str, Any]:
    """A new object's row: each column as the object holds it, or its Python default
    (set on the object too, as a flush would)."""
    row = {}
    for column in obj.__table__.columns:
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
    return row


def _attach(objects: list[Any], ids: Sequence[int]) -> None:
    """Make written objects the session's persistent objects, with their ids."""
    session = db.session()
    for obj, new_id in zip(objects, ids, strict=True):
        obj.id = new_id
        make_transient_to_detached(obj)
        session.add(obj)


@functools.lru_cache(maxsize=64)
def _written_together(shape: tuple[Any, ...], dialect: Any) -> tuple[str, list[Any]]:
    """PostgreSQL: the INSERTs and UPDATEs of one :func:`write_as_loaded` as
    data-modifying CTEs of one SELECT, which returns each INSERT's ids (in the rows'
    order: a sequence numbers one statement's rows in the order of its VALUES) and
    each UPDATE's row count. Compiled once a shape (tables, columns, row counts), with
    the bind processors of its parameters, and run as the driver's SQL: SQLAlchemy
    does not cache a multi-row INSERT's compilation, and would compile it every time.
    """
    inserts, updates = shape
    parts = []
    for i, (table, columns, count) in enumerate(inserts):
        missing = {c.key for c in table.columns if not c.primary_key} - set(columns)
        if missing:
            # Core would fill them with defaults of its own, which are not bound here.
            raise ValueError(f"rows for {table.name} lack {sorted(missing)}")
        cte = (
            insert(table)
            .values(
                [
                    {
                        name: bindparam(f"w{i}_{r}_{k}", type_=table.c[name].type)
                        for k, name in enumerate(columns)
                    }
                    for r in range(count)
                ]
            )
            .returning(table.c.id)
            .cte(f"w{i}")
        )
        parts.append(
            select(func.array_agg(aggregate_order_by(cte.c.id, cte.c.id))).scalar_subquery()
        )
    for i, (table, columns) in enumerate(updates):
        cte = (
            update(table)
            .where(table.c.id == bindparam(f"u{i}_0", type_=table.c.id.type))
            .values(
                {
                    name: bindparam(f"u{i}_{k}", type_=table.c[name].type)
                    for k, name in enumerate(columns)
                    if k
                }
            )
            .returning(table.c.id)
            .cte(f"u{i}")
        )
        parts.append(select(func.count()).select_from(cte).scalar_subquery())
    compiled = select(*parts).compile(dialect=dialect)
    processors = [
        (name, process)
        for name, bind in compiled.binds.items()
        if (process := bind.type._cached_bind_processor(dialect)) is not None
    ]
    return compiled.string, processors


@functools.cache
def _update_by_id(table: Any, columns: tuple[str, ...]) -> Any:
    """UPDATE ``table`` SET ``columns`` but the first (the id) WHERE id = :p0, built
    once; the values are bound as p0, p1, ... (a bindparam may not take a column's own
    name in SET)."""
    return (
        update(table)
        .where(table.c.id == bindparam("p0", type_=table.c.id.type))
        .values(
            {
                name: bindparam(f"p{k}", type_=table.c[name].type)
                for k, name in enumerate(columns)
                if k
            }
        )
    )


@functools.cache
def _insert_returning_ids(table: Any) -> Any:
    """INSERT into ``table`` RETURNING the ids in the rows' order, built once a table."""
    return insert(table).returning(table.c.id, sort_by_parameter_order=True)
