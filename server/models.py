"""Every model, imported in one place so the metadata (and Alembic) sees them all."""

from server.areas.models import Area, AreaBoundary, AreaLevel
from server.audit.models import AuditEntry
from server.auth.models import PasswordLink, Role, User
from server.cases.models import (
    CaseEvent,
    CaseState,
    ClassStandard,
    Household,
    HouseholdClass,
    Member,
    Relation,
)
from server.console.models import MonthCount, MonthRollup
from server.deaths.models import DeathImport, Overpayment
from server.devices.models import DeviceToken
from server.faces.models import FaceTemplate, FaceTemplateClock, FaceTemplateVersion
from server.monthly.models import CampaignStep
from server.payments.models import PaymentMonth
from server.proof_of_life.models import (
    ContactTask,
    ProofOfLifeAttempt,
    ProofOfLifeFrame,
    ProofOfLifeMonth,
)
from server.public.models import PublicCase, PublicCensus, PublicDirty, PublicSnapshot
from server.visits.integrity.pattern_models import VisitPattern, VisitPatternMember
from server.visits.models import (
    BackCheck,
    BackCheckDraw,
    Survey,
    SurveyFlag,
    SurveyPhoto,
    VisitReview,
)

__all__ = [
    "Area",
    "AreaBoundary",
    "AreaLevel",
    "AuditEntry",
    "BackCheck",
    "BackCheckDraw",
    "CampaignStep",
    "CaseEvent",
    "CaseState",
    "ClassStandard",
    "ContactTask",
    "DeathImport",
    "DeviceToken",
    "FaceTemplate",
    "FaceTemplateClock",
    "FaceTemplateVersion",
    "Household",
    "HouseholdClass",
    "Member",
    "MonthCount",
    "MonthRollup",
    "Overpayment",
    "PasswordLink",
    "PaymentMonth",
    "ProofOfLifeAttempt",
    "ProofOfLifeFrame",
    "ProofOfLifeMonth",
    "PublicCase",
    "PublicCensus",
    "PublicDirty",
    "PublicSnapshot",
    "Relation",
    "Role",
    "Survey",
    "SurveyFlag",
    "SurveyPhoto",
    "User",
    "VisitPattern",
    "VisitPatternMember",
    "VisitReview",
]
