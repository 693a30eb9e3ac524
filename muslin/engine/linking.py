"""Legacy links between containers (``HostConfig.Links``, ``docker run --link``), as dockerd keeps them.

A parent records (child id, alias) pairs at create, once the children exist; on the default bridge its
start gets the children's variables and /etc/hosts lines (``link_text`` has their text), and a child's start
refreshes the lines of its running parents. Each link also names the child ``/parent/alias``: ``docker
ps`` lists it, the API finds the child by it, and ``DELETE /containers/parent/alias?link=1`` removes the
link. On user-defined networks dockerd ignores HostConfig.Links (the CLI sends them as the endpoint's
Links, which the embedded DNS answers). Everything here runs on the engine's worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from muslin.errors import Conflict, InvalidArgument, NotFound

from . import link_text
from .link_text import LinkRef
from .ports import valid_port_keys

if TYPE_CHECKING:
    from .containers import Container, ContainerService


@dataclass
class LegacyLink:
    """One link of a parent: the child it reaches and the alias the parent knows it by."""

    child_id: str
    alias: str
    child_name: str = ""  # as at create: what dockerd still names once the child is gone


HOST_MODE_CONFLICT = "conflicting options: host type networking can't be used with links. This would result in undefined behavior"
CONTAINER_MODE_CONFLICT = ("conflicting options: container type network can't be used with links. "
                           "This would result in undefined behavior")


class LegacyLinks:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers

    # -- create ------------------------------------------------------------------------------------
    def register(self, parent_name: str, refs: tuple[LinkRef, ...], mode: str) -> list[LegacyLink]:
        """The links of a container being created in network ``mode`` ("bridge", "none", "host",
        "container:<id>" or a user network's id), each child checked as dockerd's registerLinks does."""
        if not refs:
            return []
        if mode == "host":
            raise InvalidArgument(HOST_MODE_CONFLICT)
        if mode.startswith("container:"):
            raise InvalidArgument(CONTAINER_MODE_CONFLICT)
        if mode not in ("bridge", "none"):
            return []  # dockerd keeps them in HostConfig only; they act through the endpoint's Links
        out: list[LegacyLink] = []
        for ref in refs:
            try:
                child = self.containers.get(ref.name)
            except NotFound as exc:
                # Not a 404: the CLI would take it for a missing image and try to pull it.
                raise InvalidArgument(f"could not get container for {ref.name}: {exc.message}") from None
            if child.joined_container:  # a container in another's namespace is reached at its owner
                child = self.containers.get(child.joined_container)
            if child.network_mode == "host":
                raise InvalidArgument(HOST_MODE_CONFLICT)
            if any(link.alias == ref.alias for link in out):
                name = link_text.link_name(parent_name, ref.alias)
                raise Conflict(f'Conflict. The container name "{name}" is already in use by container '
                               f'"{child.id}". You have to remove (or rename) that container to be able to reuse that name.')
            out.append(LegacyLink(child.id, ref.alias, child.name))
        return out

    # -- start ---------------------------------------------------------------------------------------
    def _children(self, parent: Container) -> list[tuple[LegacyLink, Container | None]]:
        out = []
        for link in parent.links:
            try:
                out.append((link, self.containers.get(link.child_id)))
            except NotFound:
                out.append((link, None))  # removed since: the parent cannot start with it any more
        return out

    def _bridge_address(self, c: Container) -> str | None:
        """The container's address on the default bridge while it has an endpoint there."""
        bridge = self.containers.networks.get("bridge")
        for ep in self.containers.store.endpoints(network_id=bridge.id, container_id=c.id):
            if ep.address is not None:
                return str(ep.address.ip)
        return None

    def check_children(self, parent: Container) -> None:
        """Before the parent's start: every child on the default bridge and running."""
        if not parent.links or parent.network_mode != "bridge":
            return
        for link, child in self._children(parent):
            name = link_text.link_name(parent.name, link.alias)
            if child is not None and child.network_mode != "bridge":
                raise Conflict(f"Cannot link to /{child.name}, as it does not belong to the default network")
            if child is None or not self.containers.state(child).running:
                shown = child.name if child is not None else link.child_name or link.child_id
                raise Conflict(f"Cannot link to a non running container: /{shown} AS {name}")

    def start_env(self, parent: Container) -> list[str]:
        """The variables of the parent's links (after ``check_children``); [] off the default bridge."""
        if parent.network_mode != "bridge":
            return []
        env: list[str] = []
        for link, child in self._children(parent):
            address = self._bridge_address(child) if child is not None else None
            if child is None or address is None:
                continue
            st = self.containers.state(child)
            env += link_text.link_env(link_text.link_name(parent.name, link.alias), address, list(st.process.env),
                                  self.exposed_ports(child))
        return env

    def hosts_lines(self, parent: Container) -> list[str]:
        """The parent's /etc/hosts lines for its children that have an address on the default bridge."""
        if parent.network_mode != "bridge" or not parent.links:
            return []
        lines = []
        for link, child in self._children(parent):
            address = self._bridge_address(child) if child is not None else None
            if child is not None and address is not None:
                hostname = child.config.get("Hostname") or child.id[:12]
                lines.append(link_text.hosts_line(address, link.alias, child.name, hostname))
        return lines

    def running_parents(self, child: Container) -> list[Container]:
        """Running containers on the default bridge that link to ``child`` (their hosts name it).
        Only the containers that have links are read (the store's index): a start costs no more with
        more containers."""
        return [c for c in self.containers.with_links()
                if c.network_mode == "bridge" and any(link.child_id == child.id for link in c.links)
                and self.containers.state(c).running]

    # -- names -----------------------------------------------------------------------------------------
    def child_by_link_name(self, ref: str) -> Container | None:
        """The child a ``parent/alias`` name stands for; None when ``ref`` is no link name."""
        parent_ref, _, alias = ref.strip("/").rpartition("/")
        if not parent_ref or "/" in parent_ref:
            return None
        try:
            parent = self.containers.get(parent_ref)
        except NotFound:
            return None
        link = next((link for link in parent.links if link.alias == alias), None)
        return self.containers.get(link.child_id) if link is not None else None

    def link_names(self, everyone: list[Container]) -> dict[str, list[str]]:
        """child id -> the ``/parent/alias`` names its parents give it (``docker ps`` lists them)."""
        out: dict[str, list[str]] = {}
        for parent in everyone:
            for link in parent.links:
                out.setdefault(link.child_id, []).append(link_text.link_name(parent.name, link.alias))
        return out

    def inspect_links(self, parent: Container) -> list[str] | None:
        """HostConfig.Links as dockerd shows them: ``/child:/parent/alias`` (None without links)."""
        shown = [f"/{child.name if child else link.child_name or link.child_id}:{link_text.link_name(parent.name, link.alias)}"
                 for link, child in self._children(parent)]
        return shown or None

    # -- removal ---------------------------------------------------------------------------------------
    def unlink(self, ref: str) -> Container:
        """``DELETE /containers/parent/alias?link=1``: the parent without that link (not saved yet).
        Both containers stay; the parent's variables too, as with dockerd."""
        child = self.child_by_link_name(ref)
        if child is None:
            self.containers.get(ref)  # neither a link nor a container: 404
            raise Conflict("Conflict, cannot remove the default link name of the container")
        parent_ref, _, alias = ref.strip("/").rpartition("/")
        parent = self.containers.get(parent_ref)
        parent.links = [link for link in parent.links if link.alias != alias]
        return parent

    def exposed_ports(self, c: Container) -> list[str]:
        """The child's ports as its link announces them: the image's, its own and the published ones."""
        try:
            image_ports = self.containers.images.get(c.image_id).config.get("ExposedPorts") or {}
        except NotFound:
            image_ports = {}
        own = c.config.get("ExposedPorts") or {}
        keys = [*valid_port_keys(image_ports if isinstance(image_ports, dict) else {}),
                *valid_port_keys(own if isinstance(own, dict) else {}),
                *(f"{b.container_port}/{b.proto}" for b in c.bindings)]
        return list(dict.fromkeys(keys))
