"""The region's rules: class table, deadlines, allowance method, working-day calendar.

Loaded once from a TOML file (``DIBAO_REGION_CONFIG``, or the built-in
``region_default.toml``) and validated; every rule that differs between regions
lives here rather than in code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from flask import current_app

from server.proof_of_life.rules import (
    CampaignRules,
    ProofOfLifeRules,
    parse_campaign_rules,
    parse_proof_of_life_rules,
)
from server.public.rules import PublicRules, parse_public_rules
from server.visits.checks import Thresholds
from server.visits.integrity.rules import IntegrityRules, parse_integrity_rules
from server.visits.rules import SupervisionRules, parse_supervision_rules

AllowanceMethod = Literal["gap", "fixed"]


class RegionConfigError(ValueError):
    """The region file is missing a rule or holds a value that cannot be right."""


@dataclass(frozen=True)
class ClassRule:
    code: str
    name: str
    name_en: str
    review_interval_months: int
    monthly_standard: Decimal
    fixed_monthly: Decimal


@dataclass(frozen=True)
class Deadlines:
    public_notice_days: int
    county_decision_working_days: int
    review_working_days: int
    review_working_days_special: int
    refusal_notice_working_days: int
    # An objection during the public notice is decided within this many working days.
    objection_working_days: int = 5


@dataclass(frozen=True)
class WorkingCalendar:
    holidays: frozenset[date] = frozenset()
    makeup_workdays: frozenset[date] = frozenset()

    def is_working_day(self, day: date) -> bool:
        if day in self.makeup_workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_working_days(self, start: date, days: int) -> date:
        """The date ``days`` working days after ``start`` (``start`` itself not counted)."""
        if days < 0:
            raise ValueError("days must not be negative")
        current = start
        remaining = days
        while remaining:
            current += timedelta(days=1)
            if self.is_working_day(current):
                remaining -= 1
        return current

    def working_days_between(self, start: date, end: date) -> int:
        """Working days in the half-open interval (start, end]."""
        if end <= start:
            return 0
        return sum(
            1
            for offset in range(1, (end - start).days + 1)
            if self.is_working_day(start + timedelta(days=offset))
        )


def _positive_float(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw < float("inf"):
        raise RegionConfigError(f"{where}: {raw!r} must be a positive number")
    return float(raw)


def _visit_thresholds(data: dict[str, Any]) -> tuple[Thresholds, int]:
    d = Thresholds()
    where = "visit_checks."
    thresholds = Thresholds(
        far_from_home_m=_positive_float(
            data.get("far_from_home_m", d.far_from_home_m), where + "far_from_home_m"
        ),
        low_accuracy_m=_positive_float(
            data.get("low_accuracy_m", d.low_accuracy_m), where + "low_accuracy_m"
        ),
        photo_exif_far_m=_positive_float(
            data.get("photo_exif_far_m", d.photo_exif_far_m), where + "photo_exif_far_m"
        ),
        photo_time_slack=timedelta(
            minutes=_positive_float(
                data.get("photo_time_slack_minutes", 10), where + "photo_time_slack_minutes"
            )
        ),
        max_speed_kmh=_positive_float(
            data.get("max_speed_kmh", d.max_speed_kmh), where + "max_speed_kmh"
        ),
        future_slack=timedelta(
            minutes=_positive_float(
                data.get("future_slack_minutes", 5), where + "future_slack_minutes"
            )
        ),
        stale_after=timedelta(
            days=_positive_float(data.get("stale_after_days", 30), where + "stale_after_days")
        ),
    )
    # Retired (issue 16): the face tolerances are [integrity.faces]. An older region
    # file's value is still checked, so it loads as before, and then not used.
    if "face_distance" in data:
        _positive_float(data["face_distance"], where + "face_distance")
    hamming = _positive_int(data.get("photo_reuse_hamming", 6), where + "photo_reuse_hamming")
    return thresholds, hamming


@dataclass(frozen=True)
class MapRules:
    """What the supervisor's maps highlight (docs/supervision.md, "Maps")."""

    # A leg between two visits (one's end to the next one's start) faster than this is
    # drawn as impossible: no car goes faster on village roads.
    impossible_speed_kmh: float = 80
    # Fixes of at least ``cluster_min_households`` different households within
    # ``cluster_radius_m`` of one fix: many households "visited" from one spot.
    cluster_radius_m: float = 30
    cluster_min_households: int = 3


def _map_rules(data: dict[str, Any]) -> MapRules:
    d = MapRules()
    where = "maps."
    return MapRules(
        impossible_speed_kmh=_positive_float(
            data.get("impossible_speed_kmh", d.impossible_speed_kmh),
            where + "impossible_speed_kmh",
        ),
        cluster_radius_m=_positive_float(
            data.get("cluster_radius_m", d.cluster_radius_m), where + "cluster_radius_m"
        ),
        cluster_min_households=_positive_int(
            data.get("cluster_min_households", d.cluster_min_households),
            where + "cluster_min_households",
        ),
    )


@dataclass(frozen=True)
class SmsTexts:
    """The office's SMS signature and phone, and the fixed replies (zh_CN)."""

    signature: str = "【科尔沁区民政局】"
    office_phone: str = "0482-8888888"

    @property
    def help_reply(self) -> str:
        return (
            f"{self.signature}低保每月认证：请打开提醒短信里的链接完成认证。"
            f"如需帮助请致电{self.office_phone}。我们不会向您索要密码或验证码。"
        )

    @property
    def stop_reply(self) -> str:
        return f"{self.signature}您已退订认证提醒，工作人员会联系您协助认证。回复START可恢复。"

    @property
    def start_reply(self) -> str:
        return f"{self.signature}您已恢复接收认证提醒短信。"


def _sms_texts(data: dict[str, Any]) -> SmsTexts:
    default = SmsTexts()
    signature = str(data.get("signature", default.signature)).strip()
    phone = str(data.get("office_phone", default.office_phone)).strip()
    if not (signature.startswith("【") and signature.endswith("】")) or len(signature) > 20:
        raise RegionConfigError(
            "sms.signature must look like 【office name】 (at most 20 characters)"
        )
    if not phone or len(phone) > 20:
        raise RegionConfigError("sms.office_phone must be a short phone number")
    return SmsTexts(signature=signature, office_phone=phone)


@dataclass(frozen=True)
class RegionRules:
    name: str
    name_en: str
    timezone: str
    deadlines: Deadlines
    allowance_method: AllowanceMethod
    minimum_monthly: Decimal
    classes: tuple[ClassRule, ...]
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)
    visit_thresholds: Thresholds = field(default_factory=Thresholds)
    photo_reuse_hamming: int = 6
    proof_of_life: ProofOfLifeRules = field(default_factory=ProofOfLifeRules)
    sms: SmsTexts = field(default_factory=SmsTexts)
    campaign: CampaignRules = field(default_factory=CampaignRules)
    public: PublicRules = field(default_factory=PublicRules)
    supervision: SupervisionRules = field(default_factory=SupervisionRules)
    maps: MapRules = field(default_factory=MapRules)
    integrity: IntegrityRules = field(default_factory=IntegrityRules)

    def class_rule(self, code: str) -> ClassRule:
        for rule in self.classes:
            if rule.code == code:
                return rule
        raise KeyError(code)


def _money(raw: Any, where: str) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise RegionConfigError(f"{where}: {raw!r} is not an amount of money") from exc
    if not value.is_finite() or value < 0:
        raise RegionConfigError(f"{where}: {raw!r} must be a non-negative amount")
    return value.quantize(Decimal("0.01"))


def _positive_int(raw: Any, where: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
        raise RegionConfigError(f"{where}: {raw!r} must be a positive whole number")
    return raw


def _dates(raw: Any, where: str) -> frozenset[date]:
    if not isinstance(raw, list):
        raise RegionConfigError(f"{where} must be a list of YYYY-MM-DD dates")
    try:
        return frozenset(d if isinstance(d, date) else date.fromisoformat(str(d)) for d in raw)
    except ValueError as exc:
        raise RegionConfigError(f"{where}: {exc}") from exc


def _deadlines(dl: dict[str, Any]) -> Deadlines:
    return Deadlines(
        public_notice_days=_positive_int(
            dl.get("public_notice_days"), "deadlines.public_notice_days"
        ),
        county_decision_working_days=_positive_int(
            dl.get("county_decision_working_days"), "deadlines.county_decision_working_days"
        ),
        review_working_days=_positive_int(
            dl.get("review_working_days"), "deadlines.review_working_days"
        ),
        review_working_days_special=_positive_int(
            dl.get("review_working_days_special", dl.get("review_working_days")),
            "deadlines.review_working_days_special",
        ),
        refusal_notice_working_days=_positive_int(
            dl.get("refusal_notice_working_days", 3), "deadlines.refusal_notice_working_days"
        ),
        objection_working_days=_positive_int(
            dl.get("objection_working_days", 5), "deadlines.objection_working_days"
        ),
    )


def _classes(raw_classes: Any) -> list[ClassRule]:
    """The [[classes]]: at least one, each with a short unique code."""
    if not isinstance(raw_classes, list) or not raw_classes:
        raise RegionConfigError("[[classes]] must define at least one class")
    classes: list[ClassRule] = []
    for index, item in enumerate(raw_classes):
        where = f"classes[{index}]"
        code = item.get("code")
        if not isinstance(code, str) or not code.strip() or len(code) > 8:
            raise RegionConfigError(f"{where}.code must be a short non-empty text")
        classes.append(
            ClassRule(
                code=code,
                name=str(item.get("name", code)),
                name_en=str(item.get("name_en", item.get("name", code))),
                review_interval_months=_positive_int(
                    item.get("review_interval_months"), f"{where}.review_interval_months"
                ),
                monthly_standard=_money(item.get("monthly_standard"), f"{where}.monthly_standard"),
                fixed_monthly=_money(item.get("fixed_monthly", 0), f"{where}.fixed_monthly"),
            )
        )
    codes = [c.code for c in classes]
    if len(set(codes)) != len(codes):
        raise RegionConfigError(f"class codes must be unique, got {codes}")
    return classes


def parse_region_rules(data: dict[str, Any]) -> RegionRules:
    """Validate a parsed region file and build the rules; raises RegionConfigError."""
    try:
        region = data["region"]
        dl = data["deadlines"]
        allowance = data["allowance"]
        raw_classes = data["classes"]
    except KeyError as exc:
        raise RegionConfigError(f"region config is missing the [{exc.args[0]}] section") from exc

    method = allowance.get("method")
    if method not in ("gap", "fixed"):
        raise RegionConfigError(f"allowance.method: {method!r} must be 'gap' or 'fixed'")

    deadlines = _deadlines(dl)
    classes = _classes(raw_classes)

    calendar_data = data.get("calendar", {})
    visit_thresholds, photo_reuse_hamming = _visit_thresholds(data.get("visit_checks", {}))
    try:
        proof_of_life = parse_proof_of_life_rules(data.get("proof_of_life", {}))
        campaign = parse_campaign_rules(data.get("campaign", {}), proof_of_life)
        public = parse_public_rules(data.get("public", {}))
        supervision = parse_supervision_rules(data.get("supervision", {}))
        integrity = parse_integrity_rules(data.get("integrity", {}))
    except ValueError as exc:
        raise RegionConfigError(str(exc)) from exc
    return RegionRules(
        sms=_sms_texts(data.get("sms", {})),
        maps=_map_rules(data.get("maps", {})),
        proof_of_life=proof_of_life,
        campaign=campaign,
        public=public,
        supervision=supervision,
        integrity=integrity,
        visit_thresholds=visit_thresholds,
        photo_reuse_hamming=photo_reuse_hamming,
        name=str(region.get("name", "")),
        name_en=str(region.get("name_en", region.get("name", ""))),
        timezone=str(region.get("timezone", "Asia/Shanghai")),
        deadlines=deadlines,
        allowance_method=method,
        minimum_monthly=_money(allowance.get("minimum_monthly", 0), "allowance.minimum_monthly"),
        classes=tuple(classes),
        calendar=WorkingCalendar(
            holidays=_dates(calendar_data.get("holidays", []), "calendar.holidays"),
            makeup_workdays=_dates(
                calendar_data.get("makeup_workdays", []), "calendar.makeup_workdays"
            ),
        ),
    )


def load_region_rules(path: str | Path | None) -> RegionRules:
    """Read the region file at ``path``, or the built-in defaults when ``path`` is None."""
    if path is None:
        text = resources.files("server").joinpath("region_default.toml").read_text("utf-8")
        where = "built-in region_default.toml"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise RegionConfigError(f"cannot read region config {path}: {exc.strerror}") from exc
        where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegionConfigError(f"{where} is not valid TOML: {exc}") from exc
    return parse_region_rules(data)


def region() -> RegionRules:
    """The running application's region rules (loaded once by the app factory)."""
    rules: RegionRules = current_app.config["REGION"]
    return rules


def local_time(moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored (UTC) moment in the region's time zone, for people: the one helper of
    staff pages (the ``local_time`` filter) and CLI output; "" for None."""
    if moment is None:
        return ""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(ZoneInfo(region().timezone)).strftime(fmt)


def local_iso(moment: datetime) -> str:
    """A moment as ISO 8601 with the region's offset (``+08:00``), for JSON output."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(ZoneInfo(region().timezone)).isoformat(timespec="seconds")
