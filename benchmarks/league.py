"""One seeded PostgreSQL league for every benchmark: built once, cloned in seconds.

`league_database(households=..., parts=..., months=...)` hands a benchmark a fresh
database holding a seeded league. The first call for a set of parameters builds a
template database `dibao_league_<hash>` (the hash of the parameters, the migration head
and the seeder's sources): `dibao db upgrade`, `dibao seed --households N --seed S
--today D [--with PARTS --months M]`, `VACUUM ANALYZE`, and a small table `dibao_league`
inside it recording the parameters and the SECRET_KEY and DIBAO_DATA_KEY the data was
encrypted with (so a later run decrypts it). Every call then clones the template with
`CREATE DATABASE clone TEMPLATE dibao_league_<hash>` (a file copy: seconds, not a
re-seed) and drops the clone when the caller is done. A build holds an advisory lock, so
two benchmarks asking for the same league build it once.

    from league import league_database

    with league_database(households=1_000_000, parts="all", months=3) as league:
        env = league.env  # DATABASE_URL, SECRET_KEY, DIBAO_DATA_KEY, DIBAO_INSTANCE_PATH
        ...

From the command line:

    .venv/bin/python benchmarks/league.py build --households 1000000 --with all --months 3
    .venv/bin/python benchmarks/league.py list
    .venv/bin/python benchmarks/league.py drop dibao_league_<hash> | --all

The templates stay until dropped (`list` shows their sizes): at 1,000,000 households with
every part, several GB.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from seed import DEFAULT_SERVER, BenchmarkError, base_env, run_dibao, with_database

PREFIX = "dibao_league_"
SEED = 1
SEEDER_SOURCES = ("seed.py", "seed_parts.py", "seed_history.py")


@dataclass(frozen=True)
class Template:
    name: str
    params: dict[str, Any]
    secret_key: str
    data_key: str
    built_now: bool  # False: it existed already
    timings: dict[str, float]  # step -> seconds (and seed_rss_mb), when built now


@dataclass(frozen=True)
class League:
    """A clone of a league template, for one benchmark run."""

    name: str
    url: str
    env: dict[str, str]  # the process environment for `dibao` and servers on this clone
    template: Template
    clone_seconds: float


def _server_package() -> Path:
    spec = importlib.util.find_spec("server")
    if spec is None or not spec.submodule_search_locations:
        raise BenchmarkError("cannot find the `server` package; install the project first")
    return Path(next(iter(spec.submodule_search_locations)))


def migration_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_server_package() / "migrations"))
    return ",".join(sorted(ScriptDirectory.from_config(config).get_heads()))


def params_for(
    households: int, parts: str | None, months: int, seed: int, today: date
) -> dict[str, Any]:
    """The parameters that make a league (normalised: "visits,photos" == "photos,visits")."""
    normal = None if parts is None else ",".join(sorted(p.strip() for p in parts.split(",")))
    package = _server_package()
    seeder = hashlib.sha256()
    for source in SEEDER_SOURCES:
        seeder.update((package / source).read_bytes())
    return {
        "households": households,
        "parts": normal,
        "months": months,
        "seed": seed,
        "today": today.isoformat(),
        "migration_head": migration_head(),
        "seeder": seeder.hexdigest()[:16],
    }


def template_name(params: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    return PREFIX + digest[:16]


def _admin(server: str) -> psycopg.Connection[Any]:
    return psycopg.connect(with_database(server, "postgres"), autocommit=True)


def _recorded(server: str, name: str) -> dict[str, str] | None:
    """The template's `dibao_league` table, or None when the database is missing or
    its build never finished."""
    with _admin(server) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            return None
    with psycopg.connect(with_database(server, name)) as conn:
        exists = conn.execute("SELECT to_regclass('dibao_league')").fetchone()
        if exists is None or exists[0] is None:
            return None
        return {key: value for key, value in conn.execute("SELECT key, value FROM dibao_league")}


def _drop(server: str, name: str) -> None:
    with _admin(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _template(
    name: str,
    params: dict[str, Any],
    recorded: dict[str, str],
    built_now: bool,
    timings: dict[str, float],
) -> Template:
    return Template(
        name=name,
        params=params,
        secret_key=recorded["secret_key"],
        data_key=recorded["data_key"],
        built_now=built_now,
        timings=timings,
    )


def ensure_template(
    *,
    households: int,
    parts: str | None = "all",
    months: int = 3,
    seed: int = SEED,
    today: date | None = None,
    server: str = DEFAULT_SERVER,
    verbose: bool = True,
) -> Template:
    """The league's template database, built now if it does not exist yet."""
    if parts is not None and parts.strip() == "none":
        parts = None
    params = params_for(households, parts, months, seed, today or datetime.now(UTC).date())
    name = template_name(params)
    if (recorded := _recorded(server, name)) is not None:
        return _template(name, params, recorded, False, {})
    with _admin(server) as lock:
        # One builder per league; a second one waits here, then finds it built.
        lock.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        try:
            if (recorded := _recorded(server, name)) is not None:
                return _template(name, params, recorded, False, {})
            timings = _build(server, name, params, verbose)
            recorded = _recorded(server, name)
            assert recorded is not None
            return _template(name, params, recorded, True, timings)
        finally:
            lock.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))


def _build(server: str, name: str, params: dict[str, Any], verbose: bool) -> dict[str, float]:
    _drop(server, name)  # a build that never finished
    with _admin(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(server, name)
    timings: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="dibao_league_") as tmp:
            folder = Path(tmp)
            env = {
                **base_env(folder),
                # Keys of its own, recorded below: whoever clones it decrypts with them.
                "SECRET_KEY": secrets.token_urlsafe(32),
                "DIBAO_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                "DATABASE_URL": url,
                "DIBAO_LOG_LEVEL": "WARNING",
            }
            seed_args = [
                "seed",
                "--households",
                str(params["households"]),
                "--seed",
                str(params["seed"]),
                "--today",
                params["today"],
            ]
            if params["parts"] is not None:
                seed_args += ["--with", params["parts"], "--months", str(params["months"])]
            if verbose:
                print(f"league {name}: building ({json.dumps(params)})", flush=True)
            upgrade = run_dibao(["db", "upgrade"], env, folder)
            timings["upgrade_s"] = upgrade.seconds
            started_cpu = os.times()
            seeded = run_dibao(seed_args, env, folder)
            after_cpu = os.times()
            timings["seed_s"] = seeded.seconds
            timings["seed_cpu_s"] = (after_cpu.children_user - started_cpu.children_user) + (
                after_cpu.children_system - started_cpu.children_system
            )
            timings["seed_rss_mb"] = seeded.peak_rss_mb
            if verbose:
                print(
                    f"league {name}: dibao {' '.join(seed_args)}: {seeded.seconds:.1f} s, "
                    f"{timings['seed_cpu_s']:.1f} CPU s, peak RSS {seeded.peak_rss_mb:.0f} MB",
                    flush=True,
                )
            started = time.perf_counter()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
            timings["vacuum_s"] = time.perf_counter() - started
            with psycopg.connect(url) as conn:
                conn.execute(
                    "CREATE TABLE dibao_league (key text PRIMARY KEY, value text NOT NULL)"
                )
                record = {
                    **{key: str(value) for key, value in params.items()},
                    "secret_key": env["SECRET_KEY"],
                    "data_key": env["DIBAO_DATA_KEY"],
                    "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    **{key: f"{value:.1f}" for key, value in timings.items()},
                }
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO dibao_league (key, value) VALUES (%s, %s)",
                        list(record.items()),
                    )
    except BaseException:
        _drop(server, name)
        raise
    if verbose:
        print(
            f"league {name}: built (upgrade {timings['upgrade_s']:.1f} s, seed "
            f"{timings['seed_s']:.1f} s, vacuum analyze {timings['vacuum_s']:.1f} s)",
            flush=True,
        )
    return timings


def clone(server: str, template: str, name: str, attempts: int = 10) -> float:
    """CREATE DATABASE name TEMPLATE template; seconds. Retries while another session is
    still connected to the template (PostgreSQL refuses to copy it then)."""
    started = time.perf_counter()
    for attempt in range(attempts):
        try:
            with _admin(server) as conn:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            return time.perf_counter() - started
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


@contextmanager
def league_database(
    *,
    households: int = 100_000,
    parts: str | None = "all",
    months: int = 3,
    seed: int = SEED,
    today: date | None = None,
    server: str = DEFAULT_SERVER,
    label: str = "bench",
    keep: bool = False,
    verbose: bool = True,
) -> Iterator[League]:
    """A fresh clone of the league (built first if needed), dropped on exit unless
    ``keep``. ``parts``: ``dibao seed --with`` (``None``: households only)."""
    template = ensure_template(
        households=households,
        parts=parts,
        months=months,
        seed=seed,
        today=today,
        server=server,
        verbose=verbose,
    )
    name = f"dibao_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    seconds = clone(server, template.name, name)
    if verbose:
        print(f"league {template.name}: cloned to {name} in {seconds:.1f} s", flush=True)
    url = with_database(server, name)
    with tempfile.TemporaryDirectory(prefix="dibao_league_") as tmp:
        env = {
            **base_env(Path(tmp)),
            "DATABASE_URL": url,
            "SECRET_KEY": template.secret_key,
            "DIBAO_DATA_KEY": template.data_key,
        }
        try:
            yield League(name=name, url=url, env=env, template=template, clone_seconds=seconds)
        finally:
            if not keep:
                _drop(server, name)


def list_templates(server: str) -> list[tuple[str, int, dict[str, str] | None]]:
    """(name, bytes, recorded parameters) of every league template on the server."""
    with _admin(server) as conn:
        rows = conn.execute(
            "SELECT datname, pg_database_size(datname) FROM pg_database "
            "WHERE datname LIKE %s ORDER BY datname",
            (PREFIX + "%",),
        ).fetchall()
    return [(name, size, _recorded(server, name)) for name, size in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-server", default=DEFAULT_SERVER)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the league's template (if missing)")
    build.add_argument("--households", type=int, default=100_000)
    build.add_argument(
        "--with", dest="parts", default="all", help="dibao seed --with (default: all; none)"
    )
    build.add_argument("--months", type=int, default=3)
    build.add_argument("--seed", type=int, default=SEED)
    build.add_argument("--today", type=date.fromisoformat, help="YYYY-MM-DD (default: today)")
    commands.add_parser("list", help="the league templates, their parameters and sizes")
    drop = commands.add_parser("drop", help="drop league templates")
    drop.add_argument("names", nargs="*")
    drop.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    server = args.database_server
    try:
        if args.command == "build":
            started = time.perf_counter()
            template = ensure_template(
                households=args.households,
                parts=args.parts,
                months=args.months,
                seed=args.seed,
                today=args.today,
                server=server,
            )
            state = "built" if template.built_now else "exists"
            print(f"{template.name}: {state} ({time.perf_counter() - started:.1f} s)")
            if template.built_now:
                print(json.dumps(template.timings))
        elif args.command == "list":
            for name, size, recorded in list_templates(server):
                shown = "(incomplete)"
                if recorded is not None:
                    keys = ("households", "parts", "months", "seed", "today", "seed_s", "built_at")
                    shown = " ".join(f"{k}={recorded.get(k)}" for k in keys)
                print(f"{name} {size / 2**20:,.0f} MB {shown}")
        else:
            names = [n for n, _, _ in list_templates(server)] if args.all else args.names
            for name in names:
                if not name.startswith(PREFIX):
                    parser.error(f"{name} is not a league template ({PREFIX}...)")
                _drop(server, name)
                print(f"dropped {name}")
    except (BenchmarkError, psycopg.Error) as exc:
        print(f"league failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
