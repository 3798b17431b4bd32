"""Configuration: defaults in code, then the environment, then explicit overrides,
then validation. This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from server.region import RegionConfigError, load_region_rules

logger = logging.getLogger(__name__)

DEV_SECRETS_FILE = "dev-secrets.json"

# Environment variables that map one-to-one onto config keys.
ENV_KEYS = (
    "DATABASE_URL",
    "SECRET_KEY",
    "DIBAO_DATA_KEY",
    "DIBAO_DATA_KEYS_OLD",
    "DIBAO_REGION_CONFIG",
    "PUBLIC_BASE_URL",
    "RATELIMIT_STORAGE_URI",
    "RATELIMIT_KEY_PREFIX",
    "DIBAO_TRUSTED_PROXIES",
    "DIBAO_LOG_LEVEL",
    "DIBAO_LOGIN_RATE_LIMIT",
    "DIBAO_LOGIN_ADDRESS_RATE_LIMIT",
    "DIBAO_POL_RATE_LIMIT",
    "DIBAO_POL_BATCH_RATE_LIMIT",
    "DIBAO_PUBLIC_RATE_LIMIT",
    "DIBAO_PUBLIC_NOTICE_RATE_LIMIT",
    "DIBAO_SEARCH_RATE_LIMIT",
    "DIBAO_PUBLIC_REFRESH",
    "DIBAO_PUBLIC_CACHE_SECONDS",
    "DIBAO_CONSOLE_SUMMARY_SECONDS",
    "DIBAO_CONSOLE_REFRESH",
    "DIBAO_PUBLIC_RESPONSE_CACHE_MB",
    "DIBAO_POL_FIXED_CHALLENGES",
    "DIBAO_DEVICE_TOKEN_DAYS",
    "DIBAO_PASSWORD_LINK_HOURS",
    "DIBAO_PASSWORD_LINK_RATE_LIMIT",
    "DIBAO_OBJECTION_RATE_LIMIT",
    "DIBAO_OBJECTION_CASE_RATE_LIMIT",
    "DIBAO_OBJECTION_RECEIPT_RATE_LIMIT",
    "DIBAO_MAX_PHOTO_BYTES",
    "DIBAO_MAX_REQUEST_BYTES",
    "DIBAO_DUE_WINDOW_DAYS",
    "DIBAO_MAX_PHOTO_PIXELS",
    "CELERY_BROKER_URL",
    "DIBAO_BACKGROUND_JOBS",
    "DIBAO_JOB_SWEEP_SECONDS",
    "DIBAO_JOB_SWEEP_GRACE_SECONDS",
    "DIBAO_PATTERN_DELAY_SECONDS",
    "SMS_BACKEND",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_FROM_NUMBER",
    "TWILIO_API_BASE_URL",
    "SMS_RATE_PER_SECOND",
    "SMS_CLAIM_LEASE_SECONDS",
    "SMS_RATE_REDIS_URL",
    "SMS_RATE_BURST",
    "SMS_RATE_KEY",
    "DIBAO_MONTH_OPEN_BATCH",
    "DIBAO_MONTH_OPEN_WORKERS",
)
RATE_LIMIT_KEYS = (
    "DIBAO_LOGIN_RATE_LIMIT",
    "DIBAO_LOGIN_ADDRESS_RATE_LIMIT",
    "DIBAO_POL_RATE_LIMIT",
    "DIBAO_POL_BATCH_RATE_LIMIT",
    "DIBAO_PUBLIC_RATE_LIMIT",
    "DIBAO_PUBLIC_NOTICE_RATE_LIMIT",
    "DIBAO_SEARCH_RATE_LIMIT",
    "DIBAO_PASSWORD_LINK_RATE_LIMIT",
    "DIBAO_OBJECTION_RATE_LIMIT",
    "DIBAO_OBJECTION_CASE_RATE_LIMIT",
    "DIBAO_OBJECTION_RECEIPT_RATE_LIMIT",
)
# What the limits library can keep counters in (limits.storage).
RATE_LIMIT_STORAGE_SCHEMES = (
    "memory",
    "redis",
    "rediss",
    "redis+unix",
    "redis+sentinel",
    "redis+cluster",
    "memcached",
    "mongodb",
    "mongodb+srv",
)
INT_KEYS = (
    "DIBAO_MAX_PHOTO_PIXELS",
    "DIBAO_DEVICE_TOKEN_DAYS",
    "DIBAO_PASSWORD_LINK_HOURS",
    "DIBAO_MAX_PHOTO_BYTES",
    "DIBAO_MAX_REQUEST_BYTES",
    "DIBAO_DUE_WINDOW_DAYS",
    "SMS_CLAIM_LEASE_SECONDS",
    "DIBAO_JOB_SWEEP_SECONDS",
    "DIBAO_JOB_SWEEP_GRACE_SECONDS",
    "SMS_RATE_BURST",
    "DIBAO_MONTH_OPEN_BATCH",
    "DIBAO_MONTH_OPEN_WORKERS",
)
BACKGROUND_MODES = ("thread", "inline")


class ConfigError(RuntimeError):
    """The configuration cannot run the service; the message says what to set."""


def _rate_limit_defaults() -> dict[str, str]:
    """The default of every rate limit (RATE_LIMIT_KEYS): how many tries, per what."""
    return {
        # Failed logins per username (dashboard and tablets together): tight, as a
        # password is guessed one account at a time.
        "DIBAO_LOGIN_RATE_LIMIT": "5 per minute",
        # Failed logins per client address: loose, since a whole township office
        # reaches us from one address.
        "DIBAO_LOGIN_ADDRESS_RATE_LIMIT": "100 per minute",
        # Per address, for the recipients' proof-of-life page and API (links are guessable
        # only at 144 bits, but every try costs a database look-up).
        "DIBAO_POL_RATE_LIMIT": "30 per minute",
        # Per address, for the batches of a guided proof of life (a batch a second or so
        # for a few minutes; the session id they need is unguessable): CPU protection.
        "DIBAO_POL_BATCH_RATE_LIMIT": "120 per minute",
        # Per address, for the public page and open data (docs/public.md).
        "DIBAO_PUBLIC_RATE_LIMIT": "300 per minute",
        # Per address, the printable notices (PDF) besides the above: a render costs
        # about a second of CPU (benchmarks/notices.py; docs/public.md).
        "DIBAO_PUBLIC_NOTICE_RATE_LIMIT": "20 per minute",
        # Per staff user, case searches by ID number or phone (docs/office.md).
        "DIBAO_SEARCH_RATE_LIMIT": "30 per minute;300 per day",
        # Per address, the one-time password link's page (docs/office.md).
        "DIBAO_PASSWORD_LINK_RATE_LIMIT": "20 per hour",
        # Objections sent from the public case page, per address and per case
        # (docs/public.md, "Objections during the public notice").
        "DIBAO_OBJECTION_RATE_LIMIT": "5 per hour;20 per day",
        "DIBAO_OBJECTION_CASE_RATE_LIMIT": "30 per day",
        # Per address, the objection's outcome page behind its receipt code.
        "DIBAO_OBJECTION_RECEIPT_RATE_LIMIT": "30 per minute",
    }


def defaults() -> dict[str, Any]:
    return {
        "DATABASE_URL": None,  # None: SQLite file in the instance folder
        "SECRET_KEY": None,
        "DIBAO_DATA_KEY": None,
        "DIBAO_DATA_KEYS_OLD": None,  # older keys, comma-separated, still read until rotated
        "DIBAO_REGION_CONFIG": None,  # None: built-in region_default.toml
        "PUBLIC_BASE_URL": "http://127.0.0.1:5000",
        # None: CELERY_BROKER_URL's Redis when there is one (every worker and process
        # then shares the counters), else each process counts on its own.
        "RATELIMIT_STORAGE_URI": None,
        # Put before every rate-limit key: deployments (or test runs) sharing one Redis.
        "RATELIMIT_KEY_PREFIX": "dibao",
        # How many proxies in front of the app set X-Forwarded-For/-Proto (nginx: 1).
        # 0 trusts none: the client address and scheme are the connection's own.
        "DIBAO_TRUSTED_PROXIES": 0,
        "DIBAO_LOG_LEVEL": "INFO",
        **_rate_limit_defaults(),
        # Who rebuilds the public snapshot: "background" (the Celery beat task) or
        # "inline" (the first page view after a change). None: inline without a broker.
        "DIBAO_PUBLIC_REFRESH": None,
        # How long a process trusts its idea of the current snapshot before asking again.
        "DIBAO_PUBLIC_CACHE_SECONDS": 2,
        # How old a stored summary of the progress home's numbers may be shown
        # (0: always counted live). docs/decisions/0009-console-current-summary.md
        "DIBAO_CONSOLE_SUMMARY_SECONDS": 120,
        # Who refreshes that summary: "background" (the Celery beat task, every minute)
        # or "inline" (the page view finding it old). None: inline without a broker.
        "DIBAO_CONSOLE_REFRESH": None,
        # Per process: the bytes of public answers already rendered (0 keeps none).
        "DIBAO_PUBLIC_RESPONSE_CACHE_MB": 32,
        # Tests and demos only: every proof-of-life session asks for these challenges
        # (comma-separated) instead of a random pair. Refused with production secrets.
        "DIBAO_POL_FIXED_CHALLENGES": None,
        # SMS: "outbox" keeps messages here (`dibao sms outbox`); "twilio" sends them.
        "SMS_BACKEND": "outbox",
        "TWILIO_ACCOUNT_SID": None,
        "TWILIO_AUTH_TOKEN": None,
        "TWILIO_MESSAGING_SERVICE_SID": None,
        "TWILIO_FROM_NUMBER": None,
        "TWILIO_API_BASE_URL": None,  # None: https://api.twilio.com
        # Messages per second: what the provider allows, for all sending workers together
        # when they share a limiter through Redis (below), else per worker (the
        # provider's rate divided by the number of workers); 0 turns throttling off.
        "SMS_RATE_PER_SECOND": 10,
        # The shared limiter's Redis. None: CELERY_BROKER_URL's Redis when there is one,
        # else each process throttles on its own (sms/shared_rate.py).
        "SMS_RATE_REDIS_URL": None,
        # Messages that may go back to back after a quiet spell (1: evenly spaced).
        "SMS_RATE_BURST": 1,
        # The Redis key of the shared limiter (one per provider account).
        "SMS_RATE_KEY": "dibao:sms:rate",
        # A sender that claimed a message and died: after this long another sender asks
        # the provider whether it went out, then sends it if it did not.
        "SMS_CLAIM_LEASE_SECONDS": 300,
        # Opening a month on PostgreSQL: member ids per set-based statement (one
        # transaction each; the process holds one range's members in memory).
        "DIBAO_MONTH_OPEN_BATCH": 50_000,
        # Ranges opened at once, each on its own connection: while one waits for
        # PostgreSQL (the inserts, the links' hashes) another renders and encrypts its
        # reminders. 1 opens the ranges one after the other.
        "DIBAO_MONTH_OPEN_WORKERS": 2,
        "BABEL_DEFAULT_LOCALE": "zh_CN",
        "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
        "LANGUAGES": ("zh_CN", "en"),
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_ENABLED": True,
        "HOME_PAGE_SIZE": 50,
        # Tablets: token lifetime, upload limits, how far ahead reviews are listed as due.
        "DIBAO_DEVICE_TOKEN_DAYS": 30,
        "DIBAO_PASSWORD_LINK_HOURS": 24,  # a one-time password link's life (docs/office.md)
        "DIBAO_MAX_PHOTO_BYTES": 20 * 1024 * 1024,
        "DIBAO_MAX_REQUEST_BYTES": 128 * 1024 * 1024,
        "DIBAO_DUE_WINDOW_DAYS": 30,
        # Decoding limit: a 12 MP tablet photo is far below; a pixel bomb is far above.
        "DIBAO_MAX_PHOTO_PIXELS": 40_000_000,
        # Unset: background jobs run in-process (the embedded default), as below.
        "CELERY_BROKER_URL": None,
        # Without a broker, a received visit's photo work and pattern checks run in
        # "thread": this process's background thread, after the answer; "inline": in
        # the request (server/visits/background.py, docs/odk-collect.md).
        "DIBAO_BACKGROUND_JOBS": "thread",
        # That thread takes up photos whose work a dead process left undone: every this
        # many seconds, those received longer than the grace period ago.
        "DIBAO_JOB_SWEEP_SECONDS": 300,
        "DIBAO_JOB_SWEEP_GRACE_SECONDS": 600,
        # The pattern checks of a new visit (its caseworker's day and month) wait this
        # many seconds, then run once for every visit received meanwhile: a burst of
        # uploads costs one look at the month, not one per upload. 0: right after each.
        "DIBAO_PATTERN_DELAY_SECONDS": 5,
        "TESTING": False,
    }


def instance_path(overrides: Mapping[str, Any] | None = None) -> str | None:
    """The instance folder chosen by overrides or ``DIBAO_INSTANCE_PATH``; None: Flask's default."""
    if overrides and overrides.get("DIBAO_INSTANCE_PATH"):
        return str(Path(overrides["DIBAO_INSTANCE_PATH"]).resolve())
    env = os.environ.get("DIBAO_INSTANCE_PATH")
    return str(Path(env).resolve()) if env else None


def public_base_url_for(host: str, port: int) -> str:
    """The address links should carry for a server listening on ``host:port``:
    PUBLIC_BASE_URL when it is set, else that address, which then becomes this
    process's PUBLIC_BASE_URL (the links it serves, sends and prints must open)."""
    configured = os.environ.get("PUBLIC_BASE_URL", "").strip()
    if configured:
        return configured.rstrip("/")
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{port}"
    os.environ["PUBLIC_BASE_URL"] = url
    return url


def normalize_database_url(url: str) -> str:
    """Let operators write plain ``postgresql://`` URLs; we always talk psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def decode_data_key(raw: str, name: str = "DIBAO_DATA_KEY") -> bytes:
    """A 32-byte key written as URL-safe or standard base64."""
    try:
        key = base64.urlsafe_b64decode(raw.strip() + "=" * (-len(raw.strip()) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{name} is not base64") from exc
    if len(key) != 32:
        raise ConfigError(
            f"{name} must decode to 32 bytes, it decodes to {len(key)}; "
            'make one with: python -c "import secrets,base64;'
            'print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"'
        )
    return key


def new_dev_secrets() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DIBAO_DATA_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }


def ensure_dev_secrets(folder: str) -> Path:
    """Create the demo's own secrets file in the instance folder if it is not there."""
    path = Path(folder) / DEV_SECRETS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(new_dev_secrets(), handle)
        logger.warning("generated demo secrets in %s (never use these in production)", path)
    return path


def build_config(folder: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge defaults, environment and overrides, then validate; raises ConfigError."""
    config = defaults()
    for key in ENV_KEYS:
        if key in os.environ and os.environ[key] != "":
            config[key] = os.environ[key]
    if overrides:
        config.update(overrides)
    return validate(config, folder)


def validate(config: dict[str, Any], folder: str) -> dict[str, Any]:
    _validate_secrets(config, folder)
    url = config.get("DATABASE_URL") or f"sqlite:///{Path(folder) / 'dibao.sqlite3'}"
    config["SQLALCHEMY_DATABASE_URI"] = normalize_database_url(str(url))
    try:
        config["REGION"] = load_region_rules(config.get("DIBAO_REGION_CONFIG"))
    except RegionConfigError as exc:
        raise ConfigError(f"DIBAO_REGION_CONFIG: {exc}") from exc
    base = str(config["PUBLIC_BASE_URL"]).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigError(f"PUBLIC_BASE_URL must start with http:// or https://, got {base!r}")
    config["PUBLIC_BASE_URL"] = base
    _validate_sizes(config)
    fixed = config.get("DIBAO_POL_FIXED_CHALLENGES")
    if fixed:
        if not (config.get("TESTING") or config.get("DIBAO_USING_DEV_SECRETS")):
            raise ConfigError(
                "DIBAO_POL_FIXED_CHALLENGES makes liveness predictable: it is allowed only "
                "in tests and with the demo's own secrets"
            )
        config["DIBAO_POL_FIXED_CHALLENGES"] = [c.strip() for c in str(fixed).split(",")]
    _validate_sms(config)
    _validate_public(config)
    _validate_rate_limits(config)
    level = str(config["DIBAO_LOG_LEVEL"]).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"DIBAO_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    config["DIBAO_LOG_LEVEL"] = level
    return config


def _validate_secrets(config: dict[str, Any], folder: str) -> None:
    """The secret key and the data key: from the environment, else the demo's own file."""
    dev_secrets_path = Path(folder) / DEV_SECRETS_FILE
    missing = [k for k in ("SECRET_KEY", "DIBAO_DATA_KEY") if not config.get(k)]
    if missing and dev_secrets_path.exists():
        dev = json.loads(dev_secrets_path.read_text("utf-8"))
        for key in missing:
            config[key] = dev[key]
        config["DIBAO_USING_DEV_SECRETS"] = True
        missing = []
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set. Production needs them in the environment; "
            "`dibao demo` generates demo-only secrets in the instance folder."
        )
    config["DIBAO_DATA_KEY_BYTES"] = decode_data_key(str(config["DIBAO_DATA_KEY"]))
    config["DIBAO_DATA_KEYS_OLD_BYTES"] = _old_data_keys(
        config.get("DIBAO_DATA_KEYS_OLD"), config["DIBAO_DATA_KEY_BYTES"]
    )


def _old_data_keys(raw: Any, current: bytes) -> list[bytes]:
    """DIBAO_DATA_KEYS_OLD: comma-separated keys in DIBAO_DATA_KEY's form (or a list)."""
    if not raw:
        return []
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    keys: list[bytes] = []
    for position, item in enumerate(items, start=1):
        if not str(item).strip():
            continue
        key = decode_data_key(str(item), f"DIBAO_DATA_KEYS_OLD (key {position})")
        if key == current:
            raise ConfigError(
                f"DIBAO_DATA_KEYS_OLD (key {position}) is the current DIBAO_DATA_KEY; "
                "list only the older keys there"
            )
        if key in keys:
            raise ConfigError(f"DIBAO_DATA_KEYS_OLD (key {position}) is listed twice")
        keys.append(key)
    return keys


def _validate_sizes(config: dict[str, Any]) -> None:
    """The whole-number settings (sizes, counts, seconds), and the request size limit."""
    for key in INT_KEYS:
        try:
            config[key] = int(config[key])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key} must be a whole number, got {config[key]!r}") from exc
        if config[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {config[key]}")
    if config["DIBAO_MAX_PHOTO_BYTES"] > config["DIBAO_MAX_REQUEST_BYTES"]:
        raise ConfigError("DIBAO_MAX_PHOTO_BYTES cannot exceed DIBAO_MAX_REQUEST_BYTES")
    jobs = str(config["DIBAO_BACKGROUND_JOBS"]).strip().lower()
    if jobs not in BACKGROUND_MODES:
        raise ConfigError(
            f"DIBAO_BACKGROUND_JOBS must be {' or '.join(BACKGROUND_MODES)}, got {jobs!r}"
        )
    config["DIBAO_BACKGROUND_JOBS"] = jobs
    delay = _number(
        config,
        "DIBAO_PATTERN_DELAY_SECONDS",
        "DIBAO_PATTERN_DELAY_SECONDS must be a number of seconds",
    )
    if not 0 <= delay <= 3600:
        raise ConfigError(f"DIBAO_PATTERN_DELAY_SECONDS must be 0 to 3600 seconds, got {delay}")
    config["DIBAO_PATTERN_DELAY_SECONDS"] = delay
    # Werkzeug refuses larger bodies with 413 before any of our code reads them.
    config["MAX_CONTENT_LENGTH"] = config["DIBAO_MAX_REQUEST_BYTES"]
    # Non-file form fields (the survey JSON part, with its GPS track) stay in memory.
    config.setdefault("MAX_FORM_MEMORY_SIZE", 4 * 1024 * 1024)


def _number(config: dict[str, Any], key: str, message: str) -> float:
    try:
        return float(config[key])
    except (TypeError, ValueError) as exc:
        raise ConfigError(message) from exc


def _validate_sms(config: dict[str, Any]) -> None:
    backend = str(config["SMS_BACKEND"]).strip().lower()
    if backend not in ("outbox", "twilio"):
        raise ConfigError(f"SMS_BACKEND must be outbox or twilio, got {backend!r}")
    config["SMS_BACKEND"] = backend
    if backend == "twilio":
        missing = [k for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN") if not config.get(k)]
        if not (config.get("TWILIO_MESSAGING_SERVICE_SID") or config.get("TWILIO_FROM_NUMBER")):
            missing.append("TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER")
        if missing:
            raise ConfigError(f"SMS_BACKEND=twilio needs {', '.join(missing)}")
    api_base = config.get("TWILIO_API_BASE_URL")
    if api_base and not str(api_base).startswith(("http://", "https://")):
        raise ConfigError(f"TWILIO_API_BASE_URL must be an http(s) URL, got {api_base!r}")
    rate = _number(
        config,
        "SMS_RATE_PER_SECOND",
        f"SMS_RATE_PER_SECOND must be a number, got {config['SMS_RATE_PER_SECOND']!r}",
    )
    if not 0 <= rate <= 10_000:
        raise ConfigError(f"SMS_RATE_PER_SECOND must be between 0 and 10000, got {rate}")
    config["SMS_RATE_PER_SECOND"] = rate
    shared = config.get("SMS_RATE_REDIS_URL")
    if not shared:
        broker = str(config.get("CELERY_BROKER_URL") or "")
        shared = broker if broker.startswith(("redis://", "rediss://")) else None
    if shared and not str(shared).startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            "SMS_RATE_REDIS_URL must be a Redis URL such as redis://127.0.0.1:6379/2, "
            f"got {shared!r}"
        )
    config["SMS_RATE_REDIS_URL"] = str(shared) if shared else None
    if not str(config.get("SMS_RATE_KEY") or "").strip():
        raise ConfigError("SMS_RATE_KEY must not be empty")


def _validate_public(config: dict[str, Any]) -> None:
    refresh = config.get("DIBAO_PUBLIC_REFRESH") or (
        "background" if config.get("CELERY_BROKER_URL") else "inline"
    )
    if refresh not in ("inline", "background"):
        raise ConfigError(f"DIBAO_PUBLIC_REFRESH must be inline or background, got {refresh!r}")
    config["DIBAO_PUBLIC_REFRESH"] = refresh
    config["DIBAO_PUBLIC_CACHE_SECONDS"] = _number(
        config,
        "DIBAO_PUBLIC_CACHE_SECONDS",
        "DIBAO_PUBLIC_CACHE_SECONDS must be a number of seconds",
    )
    config["DIBAO_CONSOLE_SUMMARY_SECONDS"] = _number(
        config,
        "DIBAO_CONSOLE_SUMMARY_SECONDS",
        "DIBAO_CONSOLE_SUMMARY_SECONDS must be a number of seconds",
    )
    console_refresh = config.get("DIBAO_CONSOLE_REFRESH") or (
        "background" if config.get("CELERY_BROKER_URL") else "inline"
    )
    if console_refresh not in ("inline", "background"):
        raise ConfigError(
            f"DIBAO_CONSOLE_REFRESH must be inline or background, got {console_refresh!r}"
        )
    config["DIBAO_CONSOLE_REFRESH"] = console_refresh
    config["DIBAO_PUBLIC_RESPONSE_CACHE_MB"] = _number(
        config, "DIBAO_PUBLIC_RESPONSE_CACHE_MB", "DIBAO_PUBLIC_RESPONSE_CACHE_MB must be a number"
    )


def _validate_rate_limits(config: dict[str, Any]) -> None:
    """Limit strings parsed now, not at the first request; the limiter's storage chosen;
    the number of trusted proxies checked."""
    from limits import parse_many

    for key in RATE_LIMIT_KEYS:
        try:
            parse_many(str(config[key]))
        except ValueError as exc:
            raise ConfigError(
                f"{key} must be a rate limit such as '5 per minute' or '5/minute;50/day', "
                f"got {config[key]!r}"
            ) from exc

    storage = config.get("RATELIMIT_STORAGE_URI")
    if not storage:
        broker = str(config.get("CELERY_BROKER_URL") or "")
        storage = broker if broker.startswith(("redis://", "rediss://")) else "memory://"
    scheme = str(storage).partition("://")[0]
    if "://" not in str(storage) or scheme not in RATE_LIMIT_STORAGE_SCHEMES:
        raise ConfigError(
            "RATELIMIT_STORAGE_URI must be a limits storage URI such as "
            f"redis://127.0.0.1:6379/1 or memory://, got {storage!r}"
        )
    config["RATELIMIT_STORAGE_URI"] = str(storage)

    raw = config["DIBAO_TRUSTED_PROXIES"]
    try:
        proxies = int(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"DIBAO_TRUSTED_PROXIES must be a whole number of proxies, got {raw!r}"
        ) from exc
    if not 0 <= proxies <= 5:
        raise ConfigError(f"DIBAO_TRUSTED_PROXIES must be between 0 and 5, got {proxies}")
    config["DIBAO_TRUSTED_PROXIES"] = proxies
