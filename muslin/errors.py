"""Errors of the runtime and the engine. Each carries the HTTP status Docker answers with, so the API layer
maps them 1:1; they sit below both packages so that neither depends on the other for them."""

from __future__ import annotations


class EngineError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(EngineError):
    status = 404


class Conflict(EngineError):
    status = 409


class Forbidden(EngineError):
    status = 403


class InvalidArgument(EngineError):
    status = 400


class NotModified(EngineError):
    status = 304
