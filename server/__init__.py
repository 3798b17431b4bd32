"""dibao: subsistence allowance (低保) field verification backend."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, cast

from flask import Flask, Response, current_app, request, session
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.datastructures import MultiDict
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.middleware.proxy_fix import ProxyFix

from server import config as config_module
from server import security_headers, validation
from server.celery_app import celery_init_app
from server.crypto import FieldCipher
from server.extensions import babel, csrf, db, limiter, login_manager, migrate
from server.safe_json import GuardedJSONProvider, GuardedJSONRequest
from server.storage import BlobStore

MIGRATIONS_DIR = __path__[0] + "/migrations"


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: config, extensions, blueprints, error handlers."""
    app = Flask(
        __name__,
        instance_path=config_module.instance_path(test_config),
        instance_relative_config=False,
    )
    app.config.from_mapping(config_module.build_config(app.instance_path, test_config))
    logging.getLogger("server").setLevel(app.config["DIBAO_LOG_LEVEL"])
    if app.config.get("DIBAO_USING_DEV_SECRETS"):
        app.logger.warning("using demo-only secrets from the instance folder")

    app.request_class = UploadRequest
    app.session_interface = NoSessionOnPublicPages()
    proxies = app.config["DIBAO_TRUSTED_PROXIES"]
    if proxies:
        # The client's address (rate limits, audit log) and scheme (Secure cookies,
        # HSTS) as the nearest trusted proxies saw them; with none trusted, headers a
        # client could forge are ignored.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies
        )
    # Every JSON text read within limits of size and depth (server/safe_json.py).
    app.json = GuardedJSONProvider(app)
    # UTF-8 JSON: Chinese text is a third of the size of its \uXXXX escapes (the
    # recipients' page embeds its strings as JSON; phones are on slow links).
    app.json.ensure_ascii = False
    app.extensions["dibao.cipher"] = FieldCipher(
        app.config["DIBAO_DATA_KEY_BYTES"], app.config["DIBAO_DATA_KEYS_OLD_BYTES"]
    )
    store = BlobStore(Path(app.instance_path) / "store")
    store.clean_temp()
    app.extensions["dibao.blobs"] = store
    _init_database(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, compare_type=True, render_as_batch=True)
    babel.init_app(app, locale_selector=_select_locale)
    login_manager.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)

    celery_init_app(app)
    validation.init_app(app)  # URL converters first: routes pick theirs when added
    _register_blueprints(app)
    _register_error_handlers(app)
    _register_template_helpers(app)
    security_headers.register(app)
    return app


class NoSessionOnPublicPages(SecureCookieSessionInterface):
    """The public pages (blueprint ``public``) never set a cookie nor vary on one, so
    shared caches may keep them; everything else keeps Flask's signed-cookie session.

    The cookie is ``Secure`` whenever the request came over HTTPS (``request.is_secure``,
    which ProxyFix sets from a trusted proxy's ``X-Forwarded-Proto``): Flask's
    ``SESSION_COOKIE_SECURE`` is one value for every request, and a demo served over
    plain HTTP must still be able to log in.
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or bool(app.config["SESSION_COOKIE_SECURE"])

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if request.blueprint == "public":
            return
        super().save_session(app, session, response)


class UploadFormParser(FormDataParser):
    """Werkzeug's multipart parser, fed 1 MiB reads instead of 64 KiB ones.

    Small reads cost twice: the parser's per-chunk work runs 16 times as often, and
    the WSGI server's input buffer (gunicorn's reads ahead up to 1 MiB) copies what it
    holds back on every read. Measured on an 18 MB upload: 35 % of the request's time
    went to those copies (benchmarks/README.md).
    """

    buffer_size = 1024 * 1024

    def _parse_multipart(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str],
    ) -> tuple[IO[bytes], MultiDict[str, Any], MultiDict[str, Any]]:
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        parser = MultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.cls,
            buffer_size=self.buffer_size,
        )
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


class UploadRequest(GuardedJSONRequest):
    """Streams uploaded file parts straight into the blob store's temp folder,
    hashing as they arrive, so photos are never held whole in memory.
    """

    form_data_parser_class = UploadFormParser

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        store: BlobStore = current_app.extensions["dibao.blobs"]
        temp = store.new_temp(max_bytes=current_app.config["DIBAO_MAX_PHOTO_BYTES"])
        return cast(IO[bytes], temp)


def _init_database(app: Flask) -> None:
    uri: str = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
    elif uri.startswith("postgresql"):
        # No JIT compilation: it costs 0.5-1.5 s per query that the planner deems
        # expensive (the console's counts over 100,000 cases), more than it saves on
        # queries of this size (docs/decisions/0008-console-month-rollup.md).
        options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("connect_args", {}).setdefault("options", "-c jit=off")
    db.init_app(app)
    if uri.startswith("sqlite"):
        with app.app_context():
            _configure_sqlite(db.engine)


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys on, WAL, and SQLAlchemy's recipe that lets pysqlite do real
    transactions and SAVEPOINTs (it otherwise issues BEGIN on its own terms).
    SQLite is the embedded default: transactions run one at a time.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE: take the write lock up front. A deferred transaction that has
        # read and then writes fails at once ("database is locked") when another
        # connection wrote in between; an immediate one waits its turn instead.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _select_locale() -> str | None:
    languages: tuple[str, ...] = tuple(current_app.config["LANGUAGES"])
    chosen = request.args.get("lang")
    # Public pages never touch the session: no cookie, so any cache may keep them.
    public = request.blueprint == "public"
    if chosen in languages:
        if not public:
            session["lang"] = chosen
        return chosen
    if not public and session.get("lang") in languages:
        return str(session["lang"])
    return request.accept_languages.best_match(languages) or languages[0]


def _register_blueprints(app: Flask) -> None:
    import server.models
    import server.payments.service
    import server.proof_of_life.service  # exempts the months of a member who left
    import server.public.changes  # records changes for the public snapshot
    import server.public.objections.views  # noqa: F401  objection routes (public blueprint)
    import sms
    from mobile_api.api import bp as api_bp
    from mobile_api.openrosa import bp as openrosa_bp
    from mobile_api.proof_of_life import api as pol_api_bp
    from mobile_api.proof_of_life import page as pol_page_bp
    from server.auth.views import bp as auth_bp
    from server.health import bp as health_bp
    from server.public.views import bp as public_bp
    from server.web.admin import bp as admin_bp
    from server.web.cases import bp as cases_bp
    from server.web.console_maps import bp as console_maps_bp
    from server.web.console_progress import bp as console_progress_bp
    from server.web.console_visits import bp as console_visits_bp
    from server.web.console_work import bp as console_work_bp
    from server.web.deaths import bp as deaths_bp
    from server.web.objections import bp as objections_bp
    from server.web.office import bp as office_bp

    for blueprint in (
        health_bp,
        auth_bp,
        cases_bp,
        console_visits_bp,
        console_progress_bp,
        console_maps_bp,
        api_bp,
        openrosa_bp,
        pol_api_bp,
        pol_page_bp,
        public_bp,
        console_work_bp,
        office_bp,
        deaths_bp,
        admin_bp,
        objections_bp,
    ):
        app.register_blueprint(blueprint)
    # The figures notice (a PDF for notice boards) prints the public figures' cells.
    from server.public.notices import FIGURES_SOURCE
    from server.public.views import notice_figures

    app.extensions[FIGURES_SOURCE] = notice_figures
    # The composition root wires sms/ in (its blueprints, commands, notifier, tasks).
    sms.init_app(app)


def _register_error_handlers(app: Flask) -> None:
    from mobile_api.openrosa import openrosa_error
    from server import web_errors

    web_errors.register(app, {"/openrosa/": openrosa_error})


def _register_template_helpers(app: Flask) -> None:
    from server import labels
    from server.auth import permissions
    from server.web import exports

    labels.register(app)
    permissions.register(app)
    exports.register(app)
