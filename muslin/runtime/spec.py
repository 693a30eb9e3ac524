"""What a container is (``ContainerSpec``, decided by the engine) and the OCI bundle config it becomes.

Pure functions: the image's defaults are merged in the way Docker merges them, and the OCI config is
Docker's default profile (capabilities, masked paths, devices) with the rootfs as an overlay mounted
by runc *inside* the container's mount namespace, so no rootfs mount ever exists on the host to leak.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidArgument
from .images import Image
from .layers import resolve_in_image

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
# Linux capabilities by number (include/uapi/linux/capability.h).
CAPABILITY_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
# Sysctls a container may set: those its own namespaces (network, IPC) hold.
NAMESPACED_SYSCTLS = re.compile(r"net\..+|kernel\.(msgmax|msgmnb|msgmni|sem|shmall|shmmax|shmmni|shm_rmid_forced)"
                                r"|fs\.mqueue\..+")
ETC_FILES = ("hosts", "hostname", "resolv.conf")
# Propagations that need the source's own mount to propagate too (Docker's check at start).
SHARED_PROPAGATIONS = ("shared", "rshared")
SLAVE_PROPAGATIONS = ("slave", "rslave")


@dataclass(frozen=True)
class Mount:
    """A mount the engine asks for (a bind mount of a host path or volume, or a tmpfs), in OCI terms."""

    destination: str
    type: str  # "bind" | "tmpfs"
    source: str
    options: tuple[str, ...] = ()

    def oci(self) -> dict:
        return {"destination": self.destination, "type": self.type, "source": self.source,
                "options": list(self.options)}


@dataclass(frozen=True)
class Resources:
    """Cgroup limits of a container (Docker's HostConfig resources), 0 or "" for none set."""

    cpu_shares: int = 0
    cpu_period: int = 0  # microseconds
    cpu_quota: int = 0  # microseconds per period; -1 for none
    cpu_rt_period: int = 0
    cpu_rt_runtime: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    memory: int = 0  # bytes
    memory_swap: int = 0  # memory + swap, bytes; -1 for unlimited
    memory_reservation: int = 0
    pids_limit: int = 0  # -1 for unlimited
    blkio_weight: int = 0

    def to_oci(self) -> dict:
        """The OCI LinuxResources of what is set (what `runc update --resources` and config.json take)."""
        cpu = {key: value for key, value in (
            ("shares", self.cpu_shares), ("period", self.cpu_period), ("quota", self.cpu_quota),
            ("realtimePeriod", self.cpu_rt_period), ("realtimeRuntime", self.cpu_rt_runtime),
            ("cpus", self.cpuset_cpus), ("mems", self.cpuset_mems)) if value}
        memory = {key: value for key, value in (
            ("limit", self.memory), ("swap", self.memory_swap), ("reservation", self.memory_reservation)) if value}
        out: dict = {}
        if cpu:
            out["cpu"] = cpu
        if memory:
            out["memory"] = memory
        if self.pids_limit:
            out["pids"] = {"limit": self.pids_limit}
        if self.blkio_weight:
            out["blockIO"] = {"weight": self.blkio_weight}
        return out


@dataclass
class ContainerSpec:
    """A container as the engine decided it. Empty fields take the image's defaults."""

    id: str
    image: str  # a reference or an image id
    args: list[str] = field(default_factory=list)  # the full argv; empty: the image's Entrypoint + Cmd
    env: list[str] = field(default_factory=list)  # KEY=value, over the image's Env
    workdir: str = ""
    user: str = ""  # name, uid, name:group or uid:gid
    tty: bool = False
    open_stdin: bool = False
    hostname: str = ""  # empty: the id's first 12 characters
    domainname: str = ""
    netns_path: str | None = None  # None: the daemon's own network namespace (--network host)
    hosts: str = ""  # contents of /etc/hosts
    resolv_conf: str = ""  # contents of /etc/resolv.conf
    console_size: tuple[int, int] | None = None  # (height, width) of the TTY from the start (HostConfig.ConsoleSize)
    capabilities: tuple[str, ...] = tuple(DEFAULT_CAPABILITIES)  # see ``capabilities``
    privileged: bool = False  # all capabilities, no masked or read-only paths, /sys writable
    sysctls: dict[str, str] = field(default_factory=dict)  # applied by runc inside the container's namespaces
    resources: Resources = field(default_factory=Resources)  # cgroup limits
    mounts: list[Mount] = field(default_factory=list)  # binds, volumes, tmpfs (HostConfig.Binds/Mounts/Tmpfs)
    group_add: list[str] = field(default_factory=list)  # HostConfig.GroupAdd: group names or gids


@dataclass(frozen=True)
class ProcessConfig:
    """The container's main process, after merging the image's defaults: what inspect shows."""

    args: list[str]
    env: list[str]  # Config.Env: the image's, overridden by the container's
    cwd: str
    user: str


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


def merge_env(base: list[str], override: list[str]) -> list[str]:
    keys = {e.partition("=")[0] for e in override}
    return [e for e in base if e.partition("=")[0] not in keys] + list(override)


def resolve_process(spec: ContainerSpec, image: Image) -> ProcessConfig:
    config = image.config
    args = list(spec.args) or [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    if not args:
        raise InvalidArgument("no command specified")
    cwd = spec.workdir or config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"the working directory '{cwd}' is invalid, it needs to be an absolute path")
    for entry in spec.env:
        if not entry or entry.startswith("="):
            raise InvalidArgument(f"invalid environment variable: {entry!r}")
    return ProcessConfig(args=args, env=merge_env(list(config.get("Env") or []), spec.env), cwd=cwd,
                         user=spec.user or config.get("User") or "")


def process_env(env: list[str], hostname: str, tty: bool) -> list[str]:
    """What the process really gets: Docker puts PATH, HOSTNAME and (with a TTY) TERM before Config.Env."""
    extra = [] if any(e.startswith("PATH=") for e in env) else [DEFAULT_PATH]
    extra.append(f"HOSTNAME={hostname}")
    if tty:
        extra.append("TERM=xterm")
    return merge_env(extra, env)


def _entries(lower_dirs: list[str], name: str) -> list[list[str]]:
    """The lines of the image's /etc/passwd or /etc/group (its symlinks followed inside the image)."""
    parts, layers = resolve_in_image(lower_dirs, f"/etc/{name}")
    path = Path(layers[0], *parts) if layers else None
    if path is None or path.is_symlink() or not path.is_file():
        return []
    return [line.split(":") for line in path.read_text(errors="replace").splitlines() if line.count(":") >= 2]


def resolve_user(user: str, lower_dirs: list[str]) -> User:
    """``docker run --user``: names looked up in the image's passwd and group files."""
    if not user:
        return User(0, 0)
    name, _, group = user.partition(":")
    passwd = _entries(lower_dirs, "passwd")
    groups = _entries(lower_dirs, "group")
    if name.isdigit():
        uid = int(name)
        match = next((p for p in passwd if p[2] == name), None)
    else:
        match = next((p for p in passwd if p[0] == name), None)
        if match is None:
            raise InvalidArgument(f"unable to find user {name}: no matching entries in passwd file")
        uid = int(match[2])
    gid = int(match[3]) if match is not None and len(match) > 3 and match[3].isdigit() else 0
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((g for g in groups if g[0] == group), None)
            if found is None:
                raise InvalidArgument(f"unable to find group {group}: no matching entries in group file")
            gid = int(found[2])
    member_of = tuple(int(g[2]) for g in groups
                      if match is not None and len(g) > 3 and match[0] in g[3].split(",") and g[2].isdigit())
    return User(uid, gid, tuple(sorted(set(member_of) - {gid})))


def resolve_groups(names: list[str], lower_dirs: list[str]) -> tuple[int, ...]:
    """``docker run --group-add``: gids as given, names looked up in the image's /etc/group."""
    groups = _entries(lower_dirs, "group") if any(not n.isdigit() for n in names) else []
    gids = []
    for name in names:
        if name.isdigit():
            gids.append(int(name))
            continue
        found = next((g for g in groups if g[0] == name and g[2].isdigit()), None)
        if found is None:
            raise InvalidArgument(f"Unable to find group {name}: no matching entries in group file")
        gids.append(int(found[2]))
    return tuple(gids)


def with_groups(user: User, extra: tuple[int, ...]) -> User:
    gids = tuple(dict.fromkeys((*user.additional_gids, *(g for g in extra if g != user.gid))))
    return User(user.uid, user.gid, gids)


def normalize_capability(name: str) -> str:
    upper = name.strip().upper()
    return upper if upper == "ALL" or upper.startswith("CAP_") else "CAP_" + upper


def bounding_capabilities() -> list[str]:
    """The capabilities this process may hand on: "ALL" means these (more may exist than we hold)."""
    with open("/proc/self/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return [name for bit, name in enumerate(CAPABILITY_NAMES) if mask >> bit & 1]


def capabilities(cap_add: list[str], cap_drop: list[str], privileged: bool = False) -> list[str]:
    """Docker's rules: the default set minus the dropped plus the added; "ALL" added is every
    capability but the dropped ones, "ALL" dropped starts from none. "Every" is what muslind itself
    holds; a capability asked for by name that it does not hold is refused, as is an unknown name."""
    for field_name, names in (("CapAdd", cap_add), ("CapDrop", cap_drop)):
        for name in names:
            normal = normalize_capability(name)
            if normal != "ALL" and normal not in CAPABILITY_NAMES:
                raise InvalidArgument(f'invalid {field_name}: unknown capability: "{normal}"')
    add = {normalize_capability(n) for n in cap_add}
    drop = {normalize_capability(n) for n in cap_drop}
    everything = bounding_capabilities()
    if privileged:
        return everything
    if "ALL" in add:
        return [name for name in everything if name not in drop]
    missing = sorted(add - set(everything))
    if missing:
        raise InvalidArgument(f"capability {missing[0]} cannot be granted: muslind does not hold it itself")
    base = set() if "ALL" in drop else set(DEFAULT_CAPABILITIES) - drop
    return [name for name in CAPABILITY_NAMES if name in base | add and name in everything]


def check_sysctls(sysctls: dict[str, str], host_network: bool) -> None:
    for key in sysctls:
        if not NAMESPACED_SYSCTLS.fullmatch(key):
            raise InvalidArgument(f"sysctl {key!r} is not allowed: only namespaced ones are "
                                  "(net.*, kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*)")
        if host_network and key.startswith("net."):
            raise InvalidArgument(f"sysctl {key!r} is not allowed in host network namespace")


def oci_process(args: list[str], env: list[str], cwd: str, user: User, tty: bool,
                console_size: tuple[int, int] | None = None, caps: list[str] | None = None) -> dict:
    caps = list(DEFAULT_CAPABILITIES if caps is None else caps)
    size = {}
    if tty and console_size and console_size[0] > 0 and console_size[1] > 0:
        # Sized before the process starts: `docker run -it` sends its resize only after start.
        size = {"consoleSize": {"height": int(console_size[0]), "width": int(console_size[1])}}
    return {**size,
        "terminal": tty,
        "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": list(user.additional_gids)}
                                                       if user.additional_gids else {})},
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": False,
    }


def root_propagation(mounts: list[Mount]) -> dict:
    """A shared or slave bind needs the container's root to propagate likewise (as Docker sets it)."""
    options = {o for m in mounts for o in m.options}
    if options & set(SHARED_PROPAGATIONS):
        return {"rootfsPropagation": "rshared"}
    if options & set(SLAVE_PROPAGATIONS):
        return {"rootfsPropagation": "rslave"}
    return {}


def oci_config(spec: ContainerSpec, process: dict, lower_dirs: list[str], bundle: Path) -> dict:
    """The bundle's config.json. ``bundle`` holds rootfs/ (a bare mount point), upper/, work/ and etc files."""
    if not ID_PATTERN.fullmatch(spec.id):
        raise InvalidArgument(f"invalid container id {spec.id!r}")
    overlay = f"lowerdir={':'.join(lower_dirs)},upperdir={bundle / 'upper'},workdir={bundle / 'work'}"
    if len(overlay) > os.sysconf("SC_PAGESIZE") - 1:
        raise InvalidArgument("the image has too many layers for one overlay mount")
    mounts = [
        # runc mounts this over rootfs/ in the container's own mount namespace, before everything else.
        {"destination": "/", "type": "overlay", "source": "overlay", "options": [overlay]},
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", *(() if spec.privileged else ("ro",))]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
    ]
    for name in ETC_FILES:
        mounts.append({"destination": f"/etc/{name}", "type": "bind", "source": str(bundle / name),
                       "options": ["rbind", "rprivate", "rw"]})
    # Parents before children, as Docker sorts them: a volume at /a must not hide a bind at /a/b.
    for mount in sorted(spec.mounts, key=lambda m: len(Path(m.destination).parts)):
        mounts.append(mount.oci())
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.netns_path is not None:
        namespaces.append({"type": "network", "path": spec.netns_path})
    config = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": False},
        "hostname": spec.hostname or spec.id[:12],
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": f"/muslin-{spec.id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}], **spec.resources.to_oci()},
            **({} if spec.privileged else {"maskedPaths": MASKED_PATHS, "readonlyPaths": READONLY_PATHS}),
            **({"sysctl": dict(spec.sysctls)} if spec.sysctls else {}),
            **root_propagation(spec.mounts),
        },
    }
    if spec.domainname:
        config["domainname"] = spec.domainname
    return config
