"""The ``dibao`` command: demo, serve, seed, users, backup, restore, store, and
Flask-Migrate's ``db``."""

from __future__ import annotations

import json
import os
import secrets
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, ScriptInfo, with_appcontext
from flask_migrate import upgrade
from flask_migrate.cli import db as db_commands
from sqlalchemy import func, select

from server import clock, create_app
from server import config as config_module
from server.errors import DomainError, ValidationFailed
from server.extensions import db
from server.storage import blob_store

DEMO_HOUSEHOLDS = 400
DEMO_MONTHS = 12
DEMO_LOGINS_FILE = "demo-logins.json"


def _create_app() -> Flask:
    try:
        return create_app()
    except config_module.ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


cli = FlaskGroup(
    name="dibao",
    create_app=_create_app,
    add_version_option=False,
    load_dotenv=False,
    set_debug_flag=False,
    help="""dibao: subsistence allowance (低保) verification backend.

    DATABASE_URL selects the database for every command (default: a SQLite file
    in the instance folder, DIBAO_INSTANCE_PATH). See docs/operations.md.
    """,
)
cli.add_command(db_commands, "db")


def _schema_at_head() -> bool:
    from alembic.runtime.migration import MigrationContext

    from server.health import migration_heads

    with db.engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == migration_heads()


def _serve(app: Flask, host: str, port: int, threads: int) -> None:
    from waitress import serve

    from server.visits import background

    background.start(app)  # the photo work of visits left pending by a dead server
    click.echo(f"serving on http://{host}:{port}  (Ctrl+C to stop)")
    serve(app, host=host, port=port, threads=threads, ident="dibao")


@cli.command("demo", with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option(
    "--households",
    default=DEMO_HOUSEHOLDS,
    show_default=True,
    type=int,
    help="How many households to seed into an empty database.",
)
@click.option(
    "--months",
    default=DEMO_MONTHS,
    show_default=True,
    type=click.IntRange(min=0),
    help="Months of history (visits with photos, proof of life, SMS, payments).",
)
@click.option("--no-serve", is_flag=True, help="Prepare the database and print logins, then exit.")
@click.pass_context
def demo_command(
    ctx: click.Context, host: str, port: int, households: int, months: int, no_serve: bool
) -> None:
    """Create or upgrade the demo database, seed it if empty, print logins, serve.

    Generates demo-only secrets in the instance folder when SECRET_KEY and
    DIBAO_DATA_KEY are not set; never use those in production.
    """
    folder = config_module.instance_path() or str(Path.cwd() / "instance")
    os.environ.setdefault("DIBAO_INSTANCE_PATH", folder)
    base_url = config_module.public_base_url_for(host, port)
    if not (os.environ.get("SECRET_KEY") and os.environ.get("DIBAO_DATA_KEY")):
        path = config_module.ensure_dev_secrets(folder)
        click.echo(f"demo secrets: {path} (generated for the demo only)")
    app = ctx.ensure_object(ScriptInfo).load_app()
    logins_path = Path(app.instance_path) / DEMO_LOGINS_FILE
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
        from server.areas.models import Area
        from server.seed import seed_database
        from server.seed_history import HistoryOptions

        if not db.session.scalar(select(func.count()).select_from(Area)):
            # A random seed: every demo install gets its own data and passwords.
            demo_seed = secrets.randbelow(2**31)
            click.echo(
                f"seeding {households} demo households with {months} months of history "
                f"(seed {demo_seed}) ..."
            )
            report = seed_database(
                households=households,
                seed=demo_seed,
                rules=app.config["REGION"],
                today=_today(),
                history=HistoryOptions(months=months, photos=True),
            )
            db.session.commit()
            _roll_up_console()
            _index_photos()
            _echo_history(report.history.as_json())
            if months:
                _demo_back_checks(base_url)
            fd = os.open(logins_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(report.users, handle, ensure_ascii=False, indent=1)
        click.echo(f"database: {app.config['SQLALCHEMY_DATABASE_URI']}")
        if logins_path.exists():
            _echo_logins(json.loads(logins_path.read_text("utf-8")), base_url)
        _echo_map_example(app, base_url)
        click.echo(f"public page (no login): {base_url}/public")
        _explain_base_url(base_url)
    if not no_serve:
        _serve(app, host, port, threads=8)


# What each demo login sees (by the username without its number; zh_CN, then English).
ROLE_SEES = {
    "supervisor": (
        "盟级督导：全盟监管台（只读）——进度、异常、走访轨迹地图、导出、审计日志",
        "league supervisor: the whole league's console, read-only: progress, exceptions, "
        "visit maps, exports, audit log",
    ),
    "county_supervisor": (
        "县级督导：本县监管台（只读）",
        "county supervisor: the county's console, read-only",
    ),
    "approver": (
        "县级审批：本县待审批案件、监管台、走访审核、抽查回访",
        "county approver: the county's decisions, console, visit review, back-checks",
    ),
    "reviewer": (
        "乡镇审核：本乡镇审核、监管台、走访审核、生存认证复核",
        "township reviewer: the township's reviews, console, visit review, proof-of-life reviews",
    ),
    "caseworker": (
        "村级经办：本人待办、本人当日轨迹、本人走访（无监管台）",
        "caseworker: their own worklist, day map and visits (no console)",
    ),
    "admin": (
        "管理员：账号、设备、审计日志（不办理案件）",
        "administrator: accounts, devices, audit log (decides no case)",
    ),
}


def _echo_logins(users: list[dict[str, str]], base_url: str) -> None:
    click.echo("演示账号 demo logins (username / password / role / area):")
    for user in users:
        zh, en = ROLE_SEES.get(user["username"].rstrip("0123456789"), ("", ""))
        click.echo(
            f"  {user['username']:<18} {user['password']:<16} {user['role']:<18} {user['area']}"
        )
        if zh:
            click.echo(f"      {zh}")
            click.echo(f"      {en}")
    click.echo(f"监管台 console: {base_url}/console/  (log in at {base_url}/login)")


def _echo_map_example(app: Flask, base_url: str) -> None:
    """The busiest field day of caseworker1, as a map link (when there is history)."""
    from server.auth.models import User
    from server.seed_history import busiest_day

    user = db.session.scalar(select(User).where(User.username == "caseworker1"))
    found = busiest_day(user.id, app.config["REGION"].timezone) if user else None
    if user is not None and found is not None:
        day, visits = found
        click.echo(
            f"经办人一天的走访轨迹 a caseworker's day ({visits} 次走访 visits): "
            f"{base_url}/console/maps/caseworker/{user.id}/{day.isoformat()}"
        )


def _echo_history(counts: dict[str, int]) -> None:
    click.echo(
        "历史数据 history: 走访 {visits} visits (照片 {photos} photos, 疑点 {flags} flags), "
        "生存认证月 {pol_months} proof-of-life months, 短信 {messages} SMS, "
        "发放 {payments} payments, 联系任务 {contact_tasks} contact tasks".format(**counts)
    )


def _today() -> date:
    from server.cases.workflow import local_today

    return local_today()


def _explain_base_url(base_url: str) -> None:
    """Links (the SMS, `dibao proof-of-life link`) are made from PUBLIC_BASE_URL: say which,
    so a server on another port than other commands assume is not a surprise."""
    click.echo(
        f"links in SMS and pages: {base_url} (PUBLIC_BASE_URL; export it so that other "
        "dibao commands print the same links)"
    )


@cli.command("serve", with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, threads: int) -> None:
    """Serve with waitress. In production run gunicorn behind nginx (docs/operations.md).

    Links are made from PUBLIC_BASE_URL; when it is not set, from the address served."""
    base_url = config_module.public_base_url_for(host, port)
    app = ctx.ensure_object(ScriptInfo).load_app()
    with app.app_context():
        if not _schema_at_head():
            raise click.ClickException("the database schema is not current: run `dibao db upgrade`")
    _explain_base_url(base_url)
    _serve(app, host, port, threads)


@cli.command("seed")
@click.option(
    "--households",
    required=True,
    type=click.IntRange(min=0),
    help="Number of households to create.",
)
@click.option(
    "--seed",
    "seed_value",
    default=1,
    show_default=True,
    type=int,
    help="Random seed: the same seed gives the same data.",
)
@click.option(
    "--today",
    "today_value",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Reference date for the generated dates (default: today).",
)
@click.option(
    "--months",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Months of history before the month in progress (visits, proof of life, SMS, "
    "payments; `dibao demo` seeds 12); 0: households only, the month untouched.",
)
@click.option(
    "--visits",
    type=click.IntRange(min=0),
    help="Total visits to reach (with caseworker-assisted proof-of-life visits and as many "
    "village caseworkers as they need); default: the schedule's own.",
)
@click.option(
    "--photos", is_flag=True, help="Synthesized visit photos and every check (as `dibao demo`)."
)
@click.option(
    "--with",
    "with_parts",
    metavar="PARTS",
    help="Benchmark league parts instead of the history, written in bulk: a comma-separated "
    "list of visits, photos, templates, months, payments; or all, or none "
    "(--months M: the months of proof of life and payments). Default: the history as above.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print areas, users (with passwords) as JSON."
)
def seed_command(
    households: int,
    seed_value: int,
    today_value: datetime | None,
    months: int,
    visits: int | None,
    photos: bool,
    with_parts: str | None,
    as_json: bool,
) -> None:
    """Seed an empty, migrated database: 1 county, 5 townships, 8 villages each,
    N households with 1-6 members, demo users for every role, and the last months'
    history (docs/operations.md)."""
    from server.seed import seed_database
    from server.seed_history import HistoryOptions
    from server.seed_parts import PartsOptions, parse_parts

    parts = None
    if with_parts is not None:
        if visits is not None or photos:
            raise click.UsageError("--visits and --photos shape the history; --with replaces it")
        try:
            parts = PartsOptions(parse_parts(with_parts), months=months)
        except ValidationFailed as exc:
            raise click.UsageError(exc.message) from exc
    if not _schema_at_head():
        raise click.ClickException("the database schema is not current: run `dibao db upgrade`")
    today = today_value.date() if today_value is not None else _today()
    try:
        report = seed_database(
            households=households,
            seed=seed_value,
            rules=current_app.config["REGION"],
            today=today,
            history=HistoryOptions(months=0 if parts else months, visits=visits, photos=photos),
            parts=parts,
        )
    except ValidationFailed as exc:
        raise click.ClickException(exc.message) from exc
    db.session.commit()
    if months:
        _roll_up_console()
    if photos:
        _index_photos()
    if as_json:
        click.echo(json.dumps(report.as_json(), ensure_ascii=False))
    else:
        click.echo(
            f"seeded {report.households} households, {len(report.areas)} areas, "
            f"{len(report.users)} users"
        )
        if report.parts is not None:
            click.echo(
                "parts: "
                + ", ".join(f"{name} {count}" for name, count in report.parts.as_json().items())
            )
        elif months:
            _echo_history(report.history.as_json())


@cli.group("users")
def users_group() -> None:
    """Staff accounts."""


@users_group.command("create")
@click.option("--username", required=True)
@click.option("--password", required=True, help="At least 10 characters.")
@click.option(
    "--role",
    required=True,
    type=click.Choice(
        ["caseworker", "township_reviewer", "county_approver", "supervisor", "admin"]
    ),
)
@click.option("--area", "area_code", required=True, help="Area code the user is scoped to.")
@click.option("--name", "display_name", help="The person's name as pages show it (may be Chinese).")
@with_appcontext
def users_create_command(
    username: str, password: str, role: str, area_code: str, display_name: str | None
) -> None:
    """Create a staff account scoped to one area. The username is the login: ASCII
    letters, digits and . _ - @ (tablets send it in HTTP headers)."""
    from server.auth.service import create_user

    try:
        user = create_user(
            username=username,
            password=password,
            role=role,
            area_code=area_code,
            display_name=display_name,
        )
    except ValidationFailed as exc:
        raise click.ClickException(exc.message) from exc
    db.session.commit()
    click.echo(f"created {user.username} ({user.role.value}, {area_code})")


@cli.group("areas")
def areas_group() -> None:
    """Areas: their boundaries for the maps."""


@areas_group.command("boundaries")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@with_appcontext
def areas_boundaries_command(file: Path) -> None:
    """Load area boundaries from a GeoJSON FeatureCollection: each feature's property
    `code` names its area; Polygon or MultiPolygon in WGS-84 longitude/latitude. All
    or nothing; replaces each named area's previous boundary (docs/operations.md)."""
    from server.areas.boundaries import BoundaryError, load_boundaries, read_geojson
    from server.audit import service as audit

    try:
        loaded = load_boundaries(read_geojson(file), source=file.name)
    except BoundaryError as exc:
        db.session.rollback()
        raise click.ClickException("nothing loaded:\n  " + "\n  ".join(exc.problems)) from exc
    audit.record(
        "areas.boundaries_loaded",
        actor=None,
        object_type="area_boundaries",
        source=file.name,
        areas=[b.code for b in loaded],
    )
    db.session.commit()
    for b in loaded:
        verb = "replaced" if b.replaced else "loaded"
        click.echo(f"{verb} {b.code} {b.name}: {b.vertices} vertices (file: {b.vertices_in})")


@cli.group("devices")
def devices_group() -> None:
    """Tablet logins (device tokens)."""


@devices_group.command("list")
@click.option("--user", "username", help="Only this user's tokens.")
@with_appcontext
def devices_list_command(username: str | None) -> None:
    """List device tokens: prefix, user, device, created, expires, last used, revoked."""
    from server.devices.service import list_tokens
    from server.region import local_time

    for t in list_tokens(username):
        status = f"revoked {local_time(t.revoked_at)}" if t.revoked_at else "live"
        last = local_time(t.last_used_at) if t.last_used_at else "never"
        created, expires = (
            local_time(t.created_at, "%Y-%m-%d"),
            local_time(t.expires_at, "%Y-%m-%d"),
        )
        click.echo(
            f"{t.token_prefix}  {t.user.username:<16} {t.device_id:<24} "
            f"created {created} expires {expires} used {last}  {status}"
        )


@devices_group.command("revoke")
@click.option("--token-prefix", help="The token's prefix as `dibao devices list` shows it.")
@click.option("--user", "username", help="Revoke every live token of this user ...")
@click.option("--device-id", help="... or only the one of this device.")
@with_appcontext
def devices_revoke_command(
    token_prefix: str | None, username: str | None, device_id: str | None
) -> None:
    """Revoke tablet tokens at once (a lost or stolen tablet, a caseworker who left)."""
    from server.devices.service import revoke_tokens

    if not token_prefix and not username:
        raise click.UsageError("give --token-prefix or --user")
    revoked = revoke_tokens(
        revoked_by=None, token_prefix=token_prefix, username=username, device_id=device_id
    )
    db.session.commit()
    if not revoked:
        raise click.ClickException("no live token matches")
    for t in revoked:
        click.echo(f"revoked {t.token_prefix} ({t.user.username}, {t.device_id})")


@cli.group("proof-of-life")
def pol_group() -> None:
    """Monthly proof of life: links."""


@pol_group.command("link")
@click.option("--member-id", type=int, required=True)
@click.option("--month", help="YYYY-MM (default: this month in the region's time zone)")
@click.option("--revoke", is_flag=True, help="Invalidate the current link and print a new one.")
@with_appcontext
def pol_link_command(member_id: int, month: str | None, revoke: bool) -> None:
    """Print a member's personal proof-of-life link for a month (what the SMS sends)."""

    from server.cases.models import Member
    from server.errors import DomainError
    from server.monthly.cycle import month_or_current
    from server.proof_of_life import service as pol

    member = db.session.get(Member, member_id)
    if member is None:
        raise click.ClickException(f"no member {member_id}")
    try:
        chosen = month_or_current(month, now=clock.utcnow())
        record = pol.month_record(member, chosen)
        token = pol.revoke_link(record, actor=None) if revoke else pol.link_token(record)
    except (ValueError, DomainError) as exc:
        raise click.ClickException(str(exc)) from exc
    db.session.commit()
    if clock.utcnow() >= record.window_closes_at:
        click.echo(f"note: the {chosen} window closed; this link no longer opens", err=True)
    base_url = current_app.config["PUBLIC_BASE_URL"]
    if base_url == config_module.defaults()["PUBLIC_BASE_URL"]:
        click.echo(
            f"note: PUBLIC_BASE_URL is not set, so this link assumes the service at {base_url} "
            "(set it to the address recipients reach)",
            err=True,
        )
    click.echo(pol.link_url(token))


@pol_group.command("purge-frames")
@with_appcontext
def pol_purge_frames_command() -> None:
    """Delete proof-of-life frames older than the retention period (results stay)."""

    from server.proof_of_life.service import purge_old_frames

    deleted = purge_old_frames(now=clock.utcnow(), store=blob_store())
    db.session.commit()
    click.echo(f"deleted {deleted} frames")


@cli.group("public")
def public_group() -> None:
    """The public transparency page's snapshot (docs/public.md)."""


@public_group.command("refresh")
@click.option("--force", is_flag=True, help="A full build even if nothing changed.")
@with_appcontext
def public_refresh_command(force: bool) -> None:
    """Absorb recorded changes into the published snapshot (a full build when one is
    due, or with --force)."""
    import time

    from server.public.changes import refresh

    started = time.perf_counter()
    built = refresh(force=force)
    if built is None:
        click.echo("public snapshot is current (nothing to do; --force rebuilds)")
    else:
        click.echo(
            f"public snapshot {built.id}: {built.cases} cases published, {built.withheld} "
            f"withheld, in {time.perf_counter() - started:.1f} s"
        )


@cli.group("console")
def console_group() -> None:
    """The supervisor console (docs/supervision.md)."""


def _index_photos() -> int:
    """Put the seeded photos into the photo-reuse index (as ``dibao index-photos``), so
    that later uploads are compared with them; commits every batch."""
    from server.visits.photo_index import backfill_photo_hashes

    total = 0
    while done := backfill_photo_hashes():
        db.session.commit()
        total += done
    return total


def _roll_up_console() -> int:
    """Sum up the closed months of the progress trends (``dibao console rollup``)."""
    from server.console.progress import months_to_roll, rollup

    now = clock.utcnow()
    written = rollup(months_to_roll(now), now=now)
    db.session.commit()
    return written


@console_group.command("rollup")
@with_appcontext
def console_rollup_command() -> None:
    """Sum up the closed months of the progress trends per village (the nightly beat
    task does the same; docs/supervision.md, "Progress")."""
    import time

    from server.console.progress import months_to_roll

    started = time.perf_counter()
    months = months_to_roll(clock.utcnow())
    written = _roll_up_console()
    click.echo(
        f"console rollup: {months[0]} to {months[-1]}, {written} counts, "
        f"in {time.perf_counter() - started:.1f} s"
    )


@console_group.command("refresh")
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=None,
    help="Refresh again every this many seconds until interrupted (as the beat task).",
)
@with_appcontext
def console_refresh_command(every: int | None) -> None:
    """Count the progress home's numbers of every area and store them (the summary the
    page shows; docs/decisions/0009-console-current-summary.md)."""
    import time

    from server.console.summary import refresh

    while True:
        started = time.perf_counter()
        written = refresh(clock.utcnow())
        db.session.commit()
        click.echo(
            f"console refresh: {written} numbers stored, in {time.perf_counter() - started:.1f} s",
            nl=True,
        )
        if every is None:
            return
        db.session.remove()
        time.sleep(max(0.0, every - (time.perf_counter() - started)))


@cli.group("visits")
def visits_group() -> None:
    """Field visits (docs/field-visits.md)."""


@visits_group.command("patterns")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=None,
    help="Check the last this many local days (default: [integrity.patterns] nightly_days).",
)
@with_appcontext
def visits_patterns_command(days: int | None) -> None:
    """Run the pattern checks across visits for every caseworker with visits in the last
    days (the nightly beat task does the same; docs/field-visits.md, "Patterns across
    visits"). Idempotent: a pattern found again is not stored or flagged twice."""
    from server.region import region
    from server.visits.integrity.pattern_job import check_recent

    chosen = days or region().integrity.patterns.nightly_days
    checked, flagged = check_recent(chosen)
    click.echo(
        f"visit patterns: last {chosen} days, {checked} caseworkers, {flagged} visits newly flagged"
    )


@cli.group("backchecks")
def backchecks_group() -> None:
    """The monthly back-check sample of visits (docs/supervision.md, "Back-checks")."""


@backchecks_group.command("draw")
@click.option("--month", help="YYYY-MM (default: this month in the region's time zone)")
@click.option(
    "--area",
    "area_code",
    multiple=True,
    help="Area code to draw for (repeatable; default: every township).",
)
@with_appcontext
def backchecks_draw_command(month: str | None, area_code: tuple[str, ...]) -> None:
    """Draw each area's back-check sample for a month. Idempotent: an area whose sample
    was drawn keeps it (the draw is seeded by month and area, so it is reproducible)."""
    from server.areas.models import Area, AreaLevel
    from server.errors import DomainError
    from server.visits.backchecks import draw

    chosen = month_option(month)
    query = select(Area).order_by(Area.code)
    if area_code:
        query = query.where(Area.code.in_(area_code))
    else:
        query = query.where(Area.level == AreaLevel.TOWNSHIP)
    areas = list(db.session.scalars(query))
    missing = sorted(set(area_code) - {a.code for a in areas})
    if missing:
        raise click.BadParameter(f"no area {', '.join(missing)}", param_hint="--area")
    for area in areas:
        try:
            found, new = draw(area, chosen, actor=None)
        except DomainError as exc:
            raise click.ClickException(exc.message) from exc
        db.session.commit()
        what = "drew" if new else "already drawn:"
        click.echo(f"{area.code} {chosen}: {what} {len(found.checks)} of {found.population} visits")


def _demo_back_checks(base_url: str) -> None:
    """Last month's back-check sample of every township, drawn as a supervisor would
    (docs/supervision.md, "Back-checks"), so the demo's page has one to record."""
    from server.areas.models import Area, AreaLevel
    from server.monthly.cycle import month_or_current
    from server.months import month_after
    from server.visits.backchecks import draw

    month = month_after(month_or_current(None, now=clock.utcnow()), -1)
    drawn = 0
    for area in db.session.scalars(select(Area).where(Area.level == AreaLevel.TOWNSHIP)):
        found, _ = draw(area, month, actor=None)
        drawn += len(found.checks)
    db.session.commit()
    click.echo(
        f"抽查回访 back-checks: {drawn} visits of {month} drawn for re-visits: "
        f"{base_url}/console/backchecks?month={month}"
    )


def month_option(month: str | None) -> str:
    """A ``--month`` given (checked) or this month in the region's time zone."""
    from server.monthly.cycle import month_or_current

    try:
        return month_or_current(month, now=clock.utcnow())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from exc


PAYROLL_COLUMNS = (
    ("case_code", "案件编号"),
    ("township", "乡镇"),
    ("village", "村"),
    ("payee", "收款人"),
    ("household_class", "类别"),
    ("monthly_amount", "月保障金"),
    ("month_status", "本月状态"),
    ("month_status_label", "本月状态说明"),  # the code's zh_CN label, for people
    ("month_paid", "本月发放"),
    ("suspended_months", "暂停月份"),
    ("back_pay_months", "补发月份"),
    ("back_pay", "补发金额"),
    ("total", "合计"),
)


@cli.group("deaths")
def deaths_group() -> None:
    """The civil registry's death register (docs/office.md)."""


@deaths_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--apply", "do_apply", is_flag=True, help="Apply the matched rows (default: dry run)."
)
@click.option(
    "--profile",
    default="default",
    show_default=True,
    help="Column names: a built-in profile's name or a TOML file (docs/office.md).",
)
@click.option(
    "--user",
    "username",
    help="The county approver applying (required with --apply): only members in their "
    "area are applied, and the suspensions are theirs.",
)
@click.option("--rows", "show_rows", is_flag=True, help="List every row that matched a member.")
@with_appcontext
def deaths_import_command(
    file: Path, do_apply: bool, profile: str, username: str | None, show_rows: bool
) -> None:
    """Match a death-register file (CSV or .xlsx) against the members by ID number.

    A dry run by default: counts per class (matched, not_found, ambiguous,
    already_applied) and, with --rows, each row that matched a member, names and ID
    numbers masked. --apply records the matched deaths in one transaction; the same
    file again changes nothing. See docs/office.md, "Matching the death register".
    """
    from server.auth.models import User
    from server.crypto import mask_id_number
    from server.deaths import importer
    from server.deaths import service as deaths

    chosen = importer.load_profile(profile)
    data = file.read_bytes()
    actor = None
    if username is not None:
        actor = db.session.scalar(select(User).where(User.username == username))
        if actor is None or not actor.is_active:
            raise click.UsageError(f"no active user {username!r}")
    elif do_apply:
        raise click.UsageError("--apply needs --user (a county approver)")
    try:
        report = (
            deaths.apply(data, actor=actor, profile=chosen)
            if do_apply and actor is not None
            else deaths.check(data, actor=actor, profile=chosen)
        )
    except ValidationFailed as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from exc
    except DomainError as exc:
        db.session.rollback()
        raise click.ClickException(exc.message) from exc
    if show_rows:
        for row in report.rows:
            if row.member is None or not row.in_area:
                continue
            click.echo(
                f"line {row.row.line}\t{row.row_class.value}\t"
                f"{row.reason.value if row.reason else ''}\t"
                f"{mask_id_number(row.row.id_number)}\t{importer.mask_name(row.row.name)}\t"
                f"{row.row.raw_date}\t{report.case_codes.get(row.member.household_id, '')}"
            )
    counts = report.counts()
    click.echo(" ".join(f"{name}={count}" for name, count in counts.items()))
    if do_apply:
        db.session.commit()
        if report.import_id is None:
            click.echo("nothing to apply")
        else:
            click.echo(
                f"applied import {report.import_id}: {len(report.classification.to_apply())} "
                f"deaths, {len(report.overpayments)} overpaid months listed"
            )
    else:
        db.session.rollback()
        click.echo("dry run: nothing changed (add --apply --user NAME to apply)")


@cli.command("payroll")
@click.option("--month", required=True, help="YYYY-MM: the payroll cut at that month's close.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write here (required for xlsx; csv goes to standard output without it).",
)
@with_appcontext
def payroll_command(month: str, fmt: str, output: Path | None) -> None:
    """Every active household with its amount, suspended months and back-pay: what the
    bank is sent. The file names each payee, so its export is audited."""
    from flask_babel import force_locale

    from server.audit import service as audit
    from server.labels import PAYMENT_STATUS_LABELS
    from server.payments.service import PayrollRow, payroll

    chosen = month_option(month)
    with force_locale("zh_CN"):
        status_labels = {code: str(label) for code, label in PAYMENT_STATUS_LABELS.items()}

    def value_of(row: PayrollRow, name: str) -> object:
        if name == "month_status_label":
            return status_labels.get(row.month_status, row.month_status)
        return getattr(row, name)

    def cells(row: PayrollRow) -> list[str]:
        values = []
        for name, _ in PAYROLL_COLUMNS:
            value = value_of(row, name)
            values.append(";".join(value) if isinstance(value, tuple) else str(value))
        return values

    header = [f"{zh} {name}" for name, zh in PAYROLL_COLUMNS]
    count, total = 0, Decimal("0.00")
    tmp = output.with_name(output.name + ".part") if output else None
    if fmt == "xlsx":
        from openpyxl import Workbook

        if tmp is None:
            raise click.UsageError("--format xlsx needs --output FILE")
        book = Workbook(write_only=True)
        sheet = book.create_sheet(f"payroll {chosen}")
        sheet.append(header)
        for row in payroll(chosen):
            sheet.append(
                [
                    float(v) if isinstance(v := value_of(row, n), Decimal) else c
                    for (n, _), c in zip(PAYROLL_COLUMNS, cells(row), strict=True)
                ]
            )
            count, total = count + 1, total + row.total
        book.save(tmp)
    else:
        import csv

        handle = tmp.open("w", encoding="utf-8-sig", newline="") if tmp else sys.stdout
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in payroll(chosen):
            writer.writerow(cells(row))
            count, total = count + 1, total + row.total
        if tmp:
            handle.close()
    if tmp and output:
        tmp.replace(output)  # never a half-written roster under the real name
    audit.record(
        "payroll.exported",
        actor=None,
        object_type="payroll",
        object_id=None,
        month=chosen,
        households=count,
        format=fmt,
    )
    db.session.commit()
    click.echo(f"{count} households, total {total}", err=True)


@cli.command("backup")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@with_appcontext
def backup_command(folder: Path) -> None:
    """Back up the database and the photo store into FOLDER (new or empty).

    PostgreSQL: pg_dump (custom format) from one snapshot; SQLite: SQLite's backup API.
    Then a copy of every photo file, checked against its hash, and manifest.json (row
    counts, every file's size and sha256). The data key (DIBAO_DATA_KEY) is NOT in the
    backup: keep it apart. Encrypting the copies is yours. See docs/operations.md.
    """
    from server.backup import BackupError, create_backup

    try:
        manifest = create_backup(folder, engine=db.engine, store=blob_store(), now=clock.utcnow())
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    db.session.commit()  # the audit row
    rows = sum(manifest["tables"].values())
    size = sum(blob["size"] for blob in manifest["blobs"])
    click.echo(
        f"backup in {folder}: {manifest['database']} database at revision "
        f"{manifest['alembic_revision']}, {len(manifest['tables'])} tables, {rows} rows; "
        f"{len(manifest['blobs'])} photo files ({size} bytes, "
        f"{manifest['referenced_blobs']} referenced)"
    )


@cli.command("restore")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that has data.")
@with_appcontext
def restore_command(folder: Path, force: bool) -> None:
    """Restore a backup made by `dibao backup` into the configured database and photo
    store (the same kind of database: PostgreSQL or SQLite). Stop the service first.

    Checks the dump's and every photo file's hash BEFORE touching the database; refuses
    a database that has data unless --force; afterwards compares every table's row count
    and every photo file with the manifest. Exits non-zero on any mismatch. Run
    `dibao db upgrade` afterwards if this version's schema is newer. See
    docs/operations.md.
    """
    from server.backup import BackupError, record_restore, restore_backup

    try:
        report = restore_backup(folder, engine=db.engine, store=blob_store(), force=force)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, expected, found in report.tables:
        mark = "ok" if expected == found else "MISMATCH"
        click.echo(f"  {name:<28} expected {expected!s:>8}  restored {found!s:>8}  {mark}")
    for problem in report.blob_problems:
        click.echo(f"  {problem}")
    click.echo(
        f"restored a {report.database} database at revision {report.alembic_revision}: "
        f"{len(report.tables)} tables, {len(report.table_mismatches)} mismatched; "
        f"{report.blobs} photo files ({report.blobs_copied} copied into the store), "
        f"{len(report.blob_problems)} bad"
    )
    record_restore(report)
    db.session.commit()
    if not report.ok:
        raise click.ClickException("the restored data does not match the backup (see above)")
    if not _schema_at_head():
        click.echo("the schema is older than this version's: run `dibao db upgrade`")


@cli.group("store")
def store_group() -> None:
    """The photo store (content-addressed files, server/storage.py)."""


@store_group.command("gc")
@click.option("--apply", is_flag=True, help="Delete them (default: only list and count).")
@click.option(
    "--grace-hours",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Never delete a file younger than this (an upload whose row has not committed).",
)
@click.option("--list", "list_digests", is_flag=True, help="Print each unreferenced file's hash.")
@with_appcontext
def store_gc_command(apply: bool, grace_hours: float, list_digests: bool) -> None:
    """Find the photo files no row refers to (a dry run unless --apply), older than the
    grace period. See docs/operations.md."""
    from server.backup import collect_garbage

    report = collect_garbage(blob_store(), grace_seconds=grace_hours * 3600, apply=apply)
    db.session.commit()  # the audit row of --apply
    if list_digests:
        for digest, size in report.orphans:
            click.echo(f"{digest} {size}")
    verb = "deleted" if apply else "would delete (dry run; --apply deletes)"
    count = report.removed if apply else len(report.orphans)
    size = report.removed_bytes if apply else report.orphan_bytes
    click.echo(
        f"{verb} {count} unreferenced files ({size} bytes); kept {report.young} younger than "
        f"{grace_hours:g} h; {report.referenced} referenced"
    )


@cli.group("keys")
def keys_group() -> None:
    """The data key (DIBAO_DATA_KEY): rotation. See docs/operations.md, "Rotating the data
    key"."""


@keys_group.command("rotate")
@click.option("--batch", default=500, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--max-batches",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many batches (run again later to continue).",
)
@with_appcontext
def keys_rotate_command(batch: int, max_batches: int | None) -> None:
    """Re-encrypt every encrypted value and re-derive every look-up hash under the current
    DIBAO_DATA_KEY, while the service runs; commits every batch, safe to stop and run
    again. Every process must already have the new key as DIBAO_DATA_KEY and the old one
    in DIBAO_DATA_KEYS_OLD (docs/operations.md)."""
    import time

    from server.keyring.rotation import rotate

    started = time.perf_counter()
    report = rotate(batch=batch, max_batches=max_batches, echo=click.echo)
    elapsed = time.perf_counter() - started
    for column in report.columns:
        click.echo(column.line())
    totals = report.totals()
    click.echo(
        f"{totals['updated']} values moved in {report.batches} batches, {elapsed:.2f} s "
        f"({totals['updated'] / elapsed if elapsed else 0:.0f} values/s)"
    )
    if not report.complete:
        click.echo("stopped after --max-batches: run `dibao keys rotate` again to continue")
    elif report.remaining or totals["unreadable"]:
        raise click.ClickException(
            f"{report.remaining} encrypted values are still not under the current key "
            f"({totals['unreadable']} unreadable under every key): see `dibao keys status`"
        )
    else:
        click.echo("every encrypted value is under the current key")
    if totals["unmatched"]:
        click.echo(
            f"{totals['unmatched']} look-up hashes match no known value and cannot be moved "
            "(opt-outs of numbers no member or message has): they stop matching when the "
            "old key is removed"
        )


@keys_group.command("status")
@click.option("--hashes", is_flag=True, help="Also the look-up hashes (decrypts every source).")
@with_appcontext
def keys_status_command(hashes: bool) -> None:
    """How many values of each column are under each key id: the old key can be removed
    from DIBAO_DATA_KEYS_OLD once only the current key id is left."""
    import re

    from server.keyring.rotation import status
    from server.types import field_cipher

    cipher = field_cipher()
    click.echo(f"current key id {cipher.current_key_id}")
    for old in cipher.key_ids[1:]:
        click.echo(f"old key id     {old}")
    left = unmatched = 0
    for column in status(hashes=hashes):
        parts = []
        for label, count in sorted(column.counts.items()):
            if label == "unmatched":
                unmatched += count
            elif label != cipher.current_key_id:
                left += count
            shown = label
            if label == cipher.current_key_id:
                shown = f"{label} (current)"
            elif label in cipher.key_ids:
                shown = f"{label} (old)"
            elif re.fullmatch(r"[0-9a-f]{8}", label):
                shown = f"{label} (no such key configured: unreadable)"
            parts.append(f"{shown}: {count}")
        click.echo(f"{column.kind:<12} {column.name:<30} {', '.join(parts) or 'empty'}")
    if unmatched:
        click.echo(
            f"{unmatched} look-up hashes match no known value (opt-outs of numbers no member "
            "or message has): no key can be told for them, a rotation cannot move them"
        )
    if left:
        click.echo(f"{left} values are not under the current key: keep the old keys")
    else:
        scope = "" if hashes else " (look-up hashes not checked: --hashes)"
        click.echo(f"everything is under the current key{scope}")


def main() -> None:
    sys.exit(cli.main(prog_name="dibao"))


if __name__ == "__main__":
    main()


@cli.command("index-photos")
@click.option("--batch", default=200, show_default=True, type=click.IntRange(min=1))
@with_appcontext
def index_photos_command(batch: int) -> None:
    """Add the photos received before the reuse index existed to it; run once after
    upgrading, safe to run again, commits every batch. See docs/field-visits.md."""
    from server.visits.photo_index import backfill_photo_hashes

    total = 0
    while done := backfill_photo_hashes(batch):
        db.session.commit()
        total += done
        click.echo(f"indexed {total} photos")
    click.echo(f"done: {total} photos indexed")
