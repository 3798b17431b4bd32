"""Office pages: the walk-in application form and case search (docs/office.md).

The walk-in form needs no JavaScript (the CSP allows no inline script): it shows a
number of member rows, and "Add a member row" posts the form back with one more, every
typed value kept. A refused form comes back with each error beside its field and
everything the clerk typed; nothing is written then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_babel import gettext as _
from flask_limiter import RateLimitExceeded
from flask_login import current_user
from sqlalchemy import Select, select

from server.areas.models import Area
from server.auth.permissions import (
    Capability,
    in_area,
    require,
    require_visible,
    staff_required,
)
from server.cases import queries, service
from server.cases.models import CaseState, Household, HouseholdClass, Relation
from server.cases.workflow import local_today
from server.crypto import ID_NUMBER_PATTERN, birth_date_from_id_number, normalize_id_number
from server.crypto import normalize_phone as phone_digits
from server.errors import ValidationFailed
from server.extensions import db, limiter
from server.labels import STATE_LABELS
from server.rate_limits import retry_after_seconds
from server.validation import MIN_DATE, parse_date, parse_id, query_enum, query_int

bp = Blueprint("office", __name__)

FIRST_ROWS = 3  # member rows of a new form
MAX_ROWS = 30  # as many members as a tablet may send
MAX_NAME = 50
MAX_ADDRESS = 200
MAX_NOTE = 500
MAX_INCOME = Decimal("99999999.99")
MOBILE = re.compile(r"^1\d{10}$")


@dataclass
class MemberRow:
    """One member row as typed (strings kept for the page) and its errors by field."""

    name: str = ""
    id_number: str = ""
    birth_date: str = ""
    relation: str = ""
    phone: str = ""
    able_to_work: bool = False
    income: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def blank(self) -> bool:
        return not any((self.name, self.id_number, self.birth_date, self.phone, self.income))


@dataclass
class WalkIn:
    """The whole form as typed, and its errors by field."""

    village_id: str = ""
    address: str = ""
    lat: str = ""
    lon: str = ""
    class_code: str = ""
    conflict_of_interest: bool = False
    conflict_note: str = ""
    special_case: bool = False
    rows: list[MemberRow] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _text(name: str) -> str:
    return (request.form.get(name) or "").strip()


def _read_form() -> WalkIn:
    count = min(max(parse_id(request.form.get("rows")) or FIRST_ROWS, 1), MAX_ROWS)
    form = WalkIn(
        village_id=_text("village"),
        address=_text("address"),
        lat=_text("lat"),
        lon=_text("lon"),
        class_code=_text("class"),
        conflict_of_interest=request.form.get("conflict_of_interest") == "yes",
        conflict_note=_text("conflict_note"),
        special_case=request.form.get("special_case") == "yes",
    )
    for index in range(count):
        prefix = f"m-{index}-"
        form.rows.append(
            MemberRow(
                name=_text(prefix + "name"),
                id_number=_text(prefix + "id_number"),
                birth_date=_text(prefix + "birth_date"),
                relation=_text(prefix + "relation"),
                phone=_text(prefix + "phone"),
                able_to_work=request.form.get(prefix + "able_to_work") == "yes",
                income=_text(prefix + "income"),
            )
        )
    return form


def _blank_form() -> WalkIn:
    rows = [MemberRow(relation=Relation.HEAD.value)] + [MemberRow() for _ in range(FIRST_ROWS - 1)]
    return WalkIn(rows=rows)


def _render(form: WalkIn, status: int = 200) -> ResponseReturnValue:
    classes = db.session.scalars(select_classes()).all()
    return (
        render_template(
            "office/walk_in.html",
            form=form,
            villages=queries.villages_in(current_user),
            classes=classes,
            relations=list(Relation),
            max_rows=MAX_ROWS,
        ),
        status,
    )


def select_classes() -> Select[HouseholdClass]:
    return select(HouseholdClass).order_by(HouseholdClass.code)


def _village(form: WalkIn) -> Area | None:
    """The chosen village; None (an error beside the field) when none was chosen. An id
    outside the actor's area is "no such village" (404), like one never issued: the
    form offers only the actor's villages, so only a forged form sends one."""
    if not form.village_id:
        form.errors["village"] = _("Choose one of your villages.")
        return None
    key = parse_id(form.village_id)
    return require_visible(
        current_user,
        db.session.get(Area, key) if key is not None else None,
        lambda area: area,
        "village",
    )


def _home(form: WalkIn) -> tuple[float, float] | None:
    """The home's coordinates when both are given; None when neither is."""
    if not form.lat and not form.lon:
        return None
    try:
        lat, lon = float(form.lat), float(form.lon)
    except ValueError:
        lat = lon = float("nan")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        form.errors["location"] = _(
            "Give both latitude (-90 to 90) and longitude (-180 to 180) in degrees, or neither."
        )
        return None
    return lat, lon


def _member(row: MemberRow, today: date) -> service.NewMember | None:
    """The row as a new member, or None with its errors set on the row."""
    errors = row.errors
    if not row.name:
        errors["name"] = _("Enter the name.")
    elif len(row.name) > MAX_NAME:
        errors["name"] = _("At most %(max)s characters.", max=MAX_NAME)
    id_number = normalize_id_number(row.id_number)
    if not ID_NUMBER_PATTERN.match(id_number):
        errors["id_number"] = _("An ID number has 18 characters: 17 digits, then a digit or X.")
    from_id = birth_date_from_id_number(id_number) if "id_number" not in errors else None
    birth = parse_date(row.birth_date) if row.birth_date else from_id
    if birth is None:
        errors["birth_date"] = (
            _("Enter the birth date as YYYY-MM-DD.")
            if row.birth_date
            else _("Enter the birth date: this ID number does not give a valid one.")
        )
    elif not MIN_DATE <= birth <= today:
        errors["birth_date"] = _("The birth date must lie between 1900 and today.")
    elif from_id is not None and birth != from_id:
        errors["birth_date"] = _(
            "The ID number gives %(date)s: correct one of them.", date=from_id.isoformat()
        )
    try:
        relation = Relation(row.relation)
    except ValueError:
        errors["relation"] = _("Choose the relation to the head.")
    phone = phone_digits(row.phone) if row.phone else None
    if phone is not None and not MOBILE.match(phone):
        errors["phone"] = _("A mobile number has 11 digits and starts with 1.")
    try:
        income = Decimal(row.income or "0")
        if not income.is_finite() or not Decimal(0) <= income <= MAX_INCOME:
            raise InvalidOperation
        if income != income.quantize(Decimal("0.01")):
            raise InvalidOperation
    except InvalidOperation:
        errors["income"] = _("A monthly income in yuan, at least 0, with at most 2 decimals.")
    if errors or birth is None:
        return None
    return service.NewMember(
        name=row.name,
        id_number=id_number,
        birth_date=birth,
        relation=relation,
        phone=phone,
        able_to_work=row.able_to_work,
        monthly_income=income.quantize(Decimal("0.01")),
    )


def _problem_text(problem: ValidationFailed) -> str:
    """A domain check's refusal in the clerk's language."""
    details = problem.details
    if problem.code == "member_registered_elsewhere":
        other = db.session.get(Household, details["household_id"])
        if other is not None and in_area(current_user, other.village):
            return _(
                "This ID number is already registered in case %(code)s (%(state)s): change "
                "that case instead.",
                code=other.case_code,
                state=str(STATE_LABELS[other.state]),
            )
        return _(
            "This ID number is already registered in an open case of a household outside "
            "your area: ask the county office."
        )
    if problem.code == "duplicate_id_number":
        return _("The same ID number as member %(n)s.", n=int(details["same_as"]) + 1)
    return {
        "village": _("Choose one of your villages."),
        "location": _("The home's location is out of range."),
        "members": _("Exactly one member must be the head of the household."),
        "class": _("Choose a class."),
    }.get(str(details.get("field")), problem.message)


def _checked(
    form: WalkIn, village: Area | None, home: tuple[float, float] | None
) -> list[service.NewMember] | None:
    """The members to register when the whole form is right; None, with every error
    set beside its field (the form's own checks and the domain's), otherwise."""
    if not form.address:
        form.errors["address"] = _("Enter the address.")
    elif len(form.address) > MAX_ADDRESS:
        form.errors["address"] = _("At most %(max)s characters.", max=MAX_ADDRESS)
    if len(form.conflict_note) > MAX_NOTE:
        form.errors["conflict_note"] = _("At most %(max)s characters.", max=MAX_NOTE)
    today = local_today()
    members: list[service.NewMember] = []
    row_of: list[int] = []  # the form row of each member checked
    for index, row in enumerate(form.rows):
        member = None if row.blank else _member(row, today)
        if member is not None:
            members.append(member)
            row_of.append(index)
    filled = [row for row in form.rows if not row.blank]
    if not filled:
        form.errors["members"] = _("Enter at least the head of the household.")
    rows_invalid = any(row.errors for row in filled)
    if village is None:
        return None
    try:
        service.check_walk_in(
            actor=current_user,
            village=village,
            home=home,
            class_code=form.class_code,
            members=members,
        )
    except service.ApplicationRefused as refused:
        for problem in refused.problems:
            name = str(problem.details.get("field"))
            if name == "members" and (rows_invalid or not filled):
                continue  # the head may be in a row not yet valid
            if name.startswith("members."):
                _members, position, column = name.split(".")
                form.rows[row_of[int(position)]].errors.setdefault(column, _problem_text(problem))
            else:
                form.errors.setdefault(name, _problem_text(problem))
        return None
    return None if form.errors or rows_invalid else members


@bp.get("/office/applications/new")
@staff_required
def walk_in_form() -> ResponseReturnValue:
    require(
        current_user,
        Capability.REGISTER_APPLICATIONS,
        "only township staff register applications",
    )
    return _render(_blank_form())


@bp.post("/office/applications/new")
@staff_required
def walk_in_submit() -> ResponseReturnValue:
    form = _read_form()
    # The area first (outside it is "does not exist"), then the role.
    village = _village(form)
    require(
        current_user,
        Capability.REGISTER_APPLICATIONS,
        "only township staff register applications",
    )
    if request.form.get("action") == "add_row":
        form.errors.clear()
        if len(form.rows) < MAX_ROWS:
            form.rows.append(MemberRow())
        return _render(form)

    home = _home(form)
    members = _checked(form, village, home)
    if members is None or village is None:
        db.session.rollback()
        return _render(form, 422)

    household = service.register_walk_in(
        actor=current_user,
        village=village,
        address=form.address,
        home=home,
        class_code=form.class_code,
        members=members,
        conflict_of_interest=form.conflict_of_interest,
        conflict_note=form.conflict_note or None,
        special_case=form.special_case,
    )
    db.session.commit()
    flash(
        _("Application registered as case %(code)s.", code=household.case_code)
        + (
            " "
            + _("The home's location is the village's centre until the initial survey's GPS fix.")
            if home is None
            else ""
        ),
        "info",
    )
    return redirect(url_for("cases.case_detail", case_code=household.case_code)), 303


# --------------------------------------------------------------------------- search


def _search_rate() -> str:
    return str(current_app.config["DIBAO_SEARCH_RATE_LIMIT"])


def _user_key() -> str:
    return f"user:{current_user.get_id()}"


def _by_case_code() -> bool:
    """A search by case code is not limited (nor audited): only by number."""
    return request.form.get("by") == "case_code"


@bp.errorhandler(RateLimitExceeded)
def _too_many_searches(exc: RateLimitExceeded) -> ResponseReturnValue:
    """The search page again, saying how long to wait before the next search by ID
    number or phone (searches by case code, village and state are not limited)."""
    seconds = retry_after_seconds(exc)
    page = render_template(
        "office/search.html",
        results=None,
        search=queries.CaseSearch(),
        villages=queries.villages_in(current_user),
        states=list(CaseState),
        personal=None,
        personal_error=_(
            "Too many searches. Please wait %(seconds)s seconds and try again.", seconds=seconds
        ),
    )
    return page, 429, {"Retry-After": str(seconds)}


@bp.get("/office/search")
@staff_required
def search_page() -> ResponseReturnValue:
    """By village and state (filters, paginated): nothing personal in the URL."""
    state = query_enum("state", CaseState)
    village_id = query_int("village", 0, minimum=0) or None
    page = query_int("page", 1)
    searched = bool(village_id or state or request.args.get("page"))
    search = queries.CaseSearch(village_id=village_id, state=state)
    results = (
        queries.search_cases(
            current_user, search, page=page, per_page=current_app.config["HOME_PAGE_SIZE"]
        )
        if searched
        else None
    )
    return render_template(
        "office/search.html",
        results=results,
        search=search,
        villages=queries.villages_in(current_user),
        states=list(CaseState),
        personal=None,
    )


@bp.post("/office/search")
@staff_required
@limiter.limit(
    _search_rate, key_func=_user_key, scope="case-search-personal", exempt_when=_by_case_code
)
def search_personal() -> ResponseReturnValue:
    """By exact case code, ID number or phone, sent in the body: whatever was typed in
    the box is never in a URL or a log. By ID number or phone: audited (what it was by,
    how many it found) and limited per user (DIBAO_SEARCH_RATE_LIMIT)."""
    by = request.form.get("by")
    value = (request.form.get("value") or "").strip()
    if by in ("id_number", "phone"):
        # Whose number is in which case is personal data: not for the administrator.
        require(
            current_user,
            Capability.READ_PERSONAL_DATA,
            "administrators do not search by ID number or phone",
        )
    error = None
    search = queries.CaseSearch()
    if by == "case_code":
        search = queries.CaseSearch(case_code=value)
    elif by == "id_number":
        if not ID_NUMBER_PATTERN.match(normalize_id_number(value)):
            error = _("An ID number has 18 characters: 17 digits, then a digit or X.")
        search = queries.CaseSearch(id_number=value)
    elif by == "phone":
        if not MOBILE.match(phone_digits(value)):
            error = _("A mobile number has 11 digits and starts with 1.")
        search = queries.CaseSearch(phone=value)
    else:
        error = _("Search by case code, ID number or phone.")
    results = None
    if error is None:
        results = queries.search_cases(
            current_user, search, page=1, per_page=current_app.config["HOME_PAGE_SIZE"]
        )
        db.session.commit()  # the audit row of this search
    return (
        render_template(
            "office/search.html",
            results=results,
            search=queries.CaseSearch(),
            villages=queries.villages_in(current_user),
            states=list(CaseState),
            personal=by if by in ("case_code", "id_number", "phone") else None,
            personal_error=error,
        ),
        422 if error else 200,
    )
