"""Exec instances: extra processes in a running container (`docker exec`)."""

from __future__ import annotations

from muslin.errors import Conflict, InvalidArgument
from muslin.runtime import ExecState, NoSuchExec, Runtime, StartFailed, Stream

from .containers import ContainerService
from .requests import ExecCreate


class ExecService:
    def __init__(self, containers: ContainerService, runtime: Runtime) -> None:
        self.containers = containers
        self.runtime = runtime

    def create(self, container_ref: str, req: ExecCreate) -> str:
        c = self.containers.get(container_ref)
        st = self.containers.state(c)
        if self.containers.restarting(c):
            raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
        if not st.running:
            raise Conflict(f"Container {c.id} is not running")
        if st.paused:
            raise Conflict(f"Container {container_ref} is paused, unpause the container before exec")
        if not req.cmd:
            raise InvalidArgument("No exec command specified")
        return self.runtime.exec_create(c.id, list(req.cmd), list(req.env), req.working_dir, req.user, req.tty,
                                        req.attach_stdin, req.console_size, req.privileged, req.detach_keys)

    def inspect(self, exec_id: str) -> ExecState:
        return self.runtime.exec_inspect(exec_id)

    def startable(self, exec_id: str) -> ExecState:
        """The exec, if it can still be started: dockerd forgets the execs of a container that has
        stopped, so starting one of them is a 404 (before any stream is set up)."""
        info = self.runtime.exec_inspect(exec_id)
        if not self.containers.state(self.containers.get(info.container_id)).running:
            raise NoSuchExec(exec_id)
        return info

    async def start(self, exec_id: str, detach: bool) -> Stream | None:
        try:
            return await self.runtime.exec_start(exec_id, detach=detach)
        except StartFailed as exc:
            # dockerd's words around runc's (containerd's error code last), so clients match them.
            raise StartFailed(f"OCI runtime exec failed: {exc.message}: unknown", exc.exit_code) from None

    def resize(self, exec_id: str, height: int, width: int) -> None:
        self.runtime.exec_inspect(exec_id)  # a missing exec is a 404, whatever its size
        try:
            self.runtime.exec_resize(exec_id, height, width)
        except (Conflict, InvalidArgument):
            pass  # as for containers: the CLI's resize races the exec's end, and 0x0 means no terminal
