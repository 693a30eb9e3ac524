"""Runtime errors, as muslin.errors so the API layer maps them to Docker's status codes unchanged."""

from __future__ import annotations

from muslin.errors import Conflict, EngineError, InvalidArgument, NotFound, NotModified

__all__ = ["Conflict", "EngineError", "InvalidArgument", "NoSuchContainer", "NoSuchExec", "NoSuchImage",
           "NotModified", "NotRunning", "StartFailed"]


class NoSuchImage(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such image: {ref}")


class NoSuchContainer(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref}")


class NoSuchExec(NotFound):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such exec instance: {ref}")


class NotRunning(Conflict):
    def __init__(self, container_id: str) -> None:
        super().__init__(f"Container {container_id} is not running")


class StartFailed(EngineError):
    """runc could not start the process; ``exit_code`` is what Docker reports for it (127, 126, 128)."""

    status = 400

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
