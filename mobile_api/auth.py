"""Bearer-token authentication for tablets."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from flask import g, request

from server.auth.models import User
from server.devices.models import DeviceToken
from server.devices.service import InvalidToken, authenticate_device

P = ParamSpec("P")
R = TypeVar("R")


def device_required(view: Callable[P, R]) -> Callable[P, R]:
    """Require ``Authorization: Bearer <device token>``; sets ``g.device``."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("send the device token as 'Authorization: Bearer <token>'")
        g.device = authenticate_device(token.strip())
        return view(*args, **kwargs)

    return wrapper


def current_device() -> DeviceToken:
    device: DeviceToken = g.device
    return device


def current_caseworker() -> User:
    return current_device().user
