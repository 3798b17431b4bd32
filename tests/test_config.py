"""Configuration: defaults, then environment, then overrides, then validation."""

from __future__ import annotations

import base64
from datetime import date
from pathlib import Path

import pytest

from server.config import ConfigError, build_config, ensure_dev_secrets, normalize_database_url
from server.proof_of_life.pipeline import Thresholds, thresholds_for
from server.proof_of_life.rules import ProofOfLifeConfigError, parse_proof_of_life_rules
from server.region import RegionConfigError, WorkingCalendar, load_region_rules

KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "SECRET_KEY",
        "DIBAO_DATA_KEY",
        "DIBAO_REGION_CONFIG",
        "PUBLIC_BASE_URL",
        "DIBAO_LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_production_without_secrets_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY and DIBAO_DATA_KEY not set"):
        build_config(str(tmp_path))


def test_the_demo_secrets_file_fills_missing_secrets(tmp_path: Path) -> None:
    ensure_dev_secrets(str(tmp_path))
    first = build_config(str(tmp_path))
    assert first["DIBAO_USING_DEV_SECRETS"] is True
    assert len(first["DIBAO_DATA_KEY_BYTES"]) == 32
    ensure_dev_secrets(str(tmp_path))  # never regenerated: data encrypted with it stays readable
    assert build_config(str(tmp_path))["DIBAO_DATA_KEY"] == first["DIBAO_DATA_KEY"]
    assert (tmp_path / "dev-secrets.json").stat().st_mode & 0o077 == 0


def test_environment_overrides_defaults_and_explicit_overrides_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "from-env")
    monkeypatch.setenv("DIBAO_DATA_KEY", KEY)
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@db:5432/dibao")
    config = build_config(str(tmp_path))
    assert config["SECRET_KEY"] == "from-env"
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://postgres@db:5432/dibao"
    assert build_config(str(tmp_path), {"SECRET_KEY": "explicit"})["SECRET_KEY"] == "explicit"


def test_the_default_database_is_sqlite_in_the_instance_folder(tmp_path: Path) -> None:
    config = build_config(str(tmp_path), {"SECRET_KEY": "s", "DIBAO_DATA_KEY": KEY})
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/dibao.sqlite3"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DIBAO_DATA_KEY": "c2hvcnQ="}, "must decode to 32 bytes"),
        ({"DIBAO_DATA_KEY": "%%%"}, "not base64|32 bytes"),
        ({"PUBLIC_BASE_URL": "example.org"}, "PUBLIC_BASE_URL"),
        ({"DIBAO_LOG_LEVEL": "chatty"}, "DIBAO_LOG_LEVEL"),
        ({"DIBAO_REGION_CONFIG": "/nonexistent/region.toml"}, "cannot read region config"),
        ({"SMS_RATE_REDIS_URL": "memcached://127.0.0.1"}, "SMS_RATE_REDIS_URL"),
        ({"SMS_RATE_BURST": "0"}, "SMS_RATE_BURST must be positive"),
        ({"SMS_RATE_KEY": " "}, "SMS_RATE_KEY"),
        ({"DIBAO_MONTH_OPEN_BATCH": "many"}, "DIBAO_MONTH_OPEN_BATCH must be a whole number"),
        ({"DIBAO_PATTERN_DELAY_SECONDS": "soon"}, "DIBAO_PATTERN_DELAY_SECONDS must be a number"),
        ({"DIBAO_PATTERN_DELAY_SECONDS": "-1"}, "DIBAO_PATTERN_DELAY_SECONDS must be 0 to 3600"),
    ],
)
def test_bad_settings_are_named_in_the_error(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(str(tmp_path), {"SECRET_KEY": "s", "DIBAO_DATA_KEY": KEY, **overrides})


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_database_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalize_database_url("sqlite:///x") == "sqlite:///x"


def test_the_built_in_region_rules_load() -> None:
    rules = load_region_rules(None)
    assert [c.code for c in rules.classes] == ["A", "B", "C"]
    assert rules.class_rule("C").review_interval_months == 3
    assert rules.deadlines.public_notice_days == 7


REGION = """
[region]
name = "测试旗"
[deadlines]
public_notice_days = 7
county_decision_working_days = 10
review_working_days = 30
[allowance]
method = "{method}"
minimum_monthly = "20.00"
[[classes]]
code = "A"
review_interval_months = {interval}
monthly_standard = "{standard}"
"""


@pytest.mark.parametrize(
    ("method", "interval", "standard", "message"),
    [
        ("gap", "12", "700.00", None),
        ("average", "12", "700.00", "allowance.method"),
        ("gap", "0", "700.00", "review_interval_months"),
        ("gap", "12", "-5", "monthly_standard"),
        ("gap", "12", "lots", "monthly_standard"),
    ],
)
def test_a_region_file_is_validated(
    tmp_path: Path, method: str, interval: str, standard: str, message: str | None
) -> None:
    path = tmp_path / "region.toml"
    path.write_text(REGION.format(method=method, interval=interval, standard=standard), "utf-8")
    if message is None:
        assert load_region_rules(path).class_rule("A").monthly_standard == 700
    else:
        with pytest.raises(RegionConfigError, match=message):
            load_region_rules(path)


def test_a_broken_region_file_says_where(tmp_path: Path) -> None:
    path = tmp_path / "region.toml"
    path.write_text("[region\n", "utf-8")
    with pytest.raises(RegionConfigError, match="not valid TOML"):
        load_region_rules(path)


def test_working_days_skip_weekends_and_holidays_and_count_make_up_days() -> None:
    calendar = WorkingCalendar(
        holidays=frozenset({date(2026, 10, 1), date(2026, 10, 2)}),
        makeup_workdays=frozenset({date(2026, 10, 10)}),
    )
    assert calendar.add_working_days(date(2026, 9, 30), 1) == date(2026, 10, 5)
    assert calendar.add_working_days(date(2026, 10, 9), 1) == date(2026, 10, 10)
    assert calendar.add_working_days(date(2026, 10, 9), 0) == date(2026, 10, 9)
    assert calendar.working_days_between(date(2026, 9, 30), date(2026, 10, 12)) == 7


def test_fixed_proof_of_life_challenges_are_refused_with_production_secrets(
    tmp_path: Path,
) -> None:
    production = {
        "SECRET_KEY": "s" * 40,
        "DIBAO_DATA_KEY": base64.urlsafe_b64encode(b"k" * 32).decode(),
        "DIBAO_POL_FIXED_CHALLENGES": "turn_left,blink",
    }
    with pytest.raises(ConfigError, match="predictable"):
        build_config(str(tmp_path), production)
    testing = build_config(str(tmp_path), {**production, "TESTING": True})
    assert testing["DIBAO_POL_FIXED_CHALLENGES"] == ["turn_left", "blink"]


def test_proof_of_life_face_tolerances_come_from_the_region_file() -> None:
    # The default region file carries the measured tolerances (docs/proof-of-life.md).
    assert thresholds_for(load_region_rules(None).proof_of_life) == Thresholds()
    rules = parse_proof_of_life_rules({"match_tolerance": 0.5, "review_tolerance": 0.58})
    chosen = thresholds_for(rules)
    assert (chosen.match_tolerance, chosen.review_tolerance) == (0.5, 0.58)
    with pytest.raises(ProofOfLifeConfigError, match="match_tolerance <= review_tolerance"):
        parse_proof_of_life_rules({"match_tolerance": 0.7, "review_tolerance": 0.6})
    with pytest.raises(ProofOfLifeConfigError, match="positive number"):
        parse_proof_of_life_rules({"match_tolerance": "0.5"})


def test_liveness_thresholds_come_from_the_region_file() -> None:
    # The default region file states the measured values (LivenessThresholds' defaults).
    assert load_region_rules(None).proof_of_life.liveness == Thresholds().liveness
    rules = parse_proof_of_life_rules({"liveness": {"turn_min_yaw": 0.3, "blink_drop": 0.2}})
    chosen = thresholds_for(rules).liveness
    assert (chosen.turn_min_yaw, chosen.blink_drop) == (0.3, 0.2)
    assert chosen.mouth_open_rise == Thresholds().liveness.mouth_open_rise  # not set: kept
    with pytest.raises(ProofOfLifeConfigError, match="unknown settings"):
        parse_proof_of_life_rules({"liveness": {"turn_min_yawn": 0.3}})
    with pytest.raises(ProofOfLifeConfigError, match="positive number"):
        parse_proof_of_life_rules({"liveness": {"turn_min_yaw": -0.3}})
    with pytest.raises(ProofOfLifeConfigError, match="must be a table"):
        parse_proof_of_life_rules({"liveness": 0.3})


def test_the_shared_sending_limiter_uses_the_redis_broker_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    base = {"SECRET_KEY": "s", "DIBAO_DATA_KEY": KEY}
    assert build_config(str(tmp_path), base)["SMS_RATE_REDIS_URL"] is None
    broker = {**base, "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}
    assert build_config(str(tmp_path), broker)["SMS_RATE_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    own = {**broker, "SMS_RATE_REDIS_URL": "redis://127.0.0.1:6379/3"}
    assert build_config(str(tmp_path), own)["SMS_RATE_REDIS_URL"] == "redis://127.0.0.1:6379/3"
    other = {**base, "CELERY_BROKER_URL": "amqp://127.0.0.1"}
    assert build_config(str(tmp_path), other)["SMS_RATE_REDIS_URL"] is None
