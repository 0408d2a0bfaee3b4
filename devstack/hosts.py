"""Several hosts on one machine: network namespaces on one bridge, and their processes.

Each `Host` is a network namespace (`ip netns`) with one veth link to a
bridge in the machine's own namespace, and one address on a private /24 of
its own (10.77.N.0/24, N free when the network is made). The machine keeps
the bridge's `.1` address, so a program here (the load, the checks) reaches
every host, while a process started in a host can listen on that host's
address only. `link_down()` takes the host's link off the bridge: its
packets go nowhere, as when a cable is pulled, and its connections stay open
until someone's timeout notices.

Needs root and iproute2's `ip`; `reason_unavailable()` says why not, where not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "dqw"  # names of our bridges, links and namespaces start with it
OWNERS = Path("/run") / f"{PREFIX}-networks"  # network id -> pid of the process that made it
NETWORKS = range(1, 64)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def reason_unavailable() -> str | None:
    """Why hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"{PREFIX}-probe-{os.getpid()}"
    result = ip("netns", "add", probe, check=False)
    if result.returncode:
        return f"`ip netns add` failed: {result.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_network(number: int) -> None:
    """Delete network `number`'s namespaces, links and bridge (whoever made them)."""
    # Links first: a deleted namespace takes its links with it only once the
    # kernel gets round to it, and a new network may want their names now.
    for line in ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(f"{PREFIX}{number}h"):
            ip("link", "del", name, check=False)
    for name in ip("netns", "list").stdout.split():
        if name.startswith(f"{PREFIX}{number}-"):
            # Processes left in it by a run that was killed go with it.
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("netns", "del", name, check=False)
    ip("link", "del", f"{PREFIX}{number}br", check=False)
    (OWNERS / str(number)).unlink(missing_ok=True)


def _claim_network() -> int:
    """A free network number: its bridge created, owned by this process."""
    OWNERS.mkdir(exist_ok=True)
    for number in NETWORKS:
        owner = OWNERS / str(number)
        with suppress(OSError, ValueError):
            if not _pid_alive(int(owner.read_text())):
                _remove_network(number)  # left by a run that was killed
        if ip("link", "add", f"{PREFIX}{number}br", "type", "bridge", check=False).returncode:
            continue  # in use
        owner.write_text(str(os.getpid()))
        return number
    raise RuntimeError("no free network number: remove leftover dqw* bridges (`ip link`)")


@dataclass
class Proc:
    """A process started in a host: its own process group and log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def signal_group(self, signum: int) -> None:
        if self.popen is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group, as a host losing power would."""
        if self.popen is not None:
            self.signal_group(signal.SIGKILL)
            self.popen.wait()

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (a warm shutdown), SIGKILL if it takes longer than `timeout`."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@dataclass
class Host:
    """One network namespace with one address; the processes started in it."""

    network: Network
    name: str
    number: int  # the last byte of its address
    procs: list[Proc] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.network.number}-{self.name}"

    @property
    def address(self) -> str:
        return f"{self.network.prefix}.{self.number}"

    @property
    def _link(self) -> str:
        # The bridge's end of the host's veth pair (names are at most 15 bytes).
        return f"{PREFIX}{self.network.number}h{self.number}"

    def create(self) -> None:
        inside = f"{self._link}i"
        ip("link", "del", self._link, check=False)  # left by a network being removed
        ip("netns", "add", self.netns)
        ip("link", "add", self._link, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", self.netns)
        ip("link", "set", self._link, "master", self.network.bridge, "up")
        for cmd in (
            ["link", "set", "lo", "up"],
            ["addr", "add", f"{self.address}/24", "dev", inside],
            ["link", "set", inside, "up"],
        ):
            ip("-n", self.netns, *cmd)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> Proc:
        """Start `argv` inside this host (its network namespace)."""
        log = self.network.log_dir / f"{self.name}-{name}-{uuid.uuid4().hex[:6]}.log"
        proc = Proc(name, ["ip", "netns", "exec", self.netns, *argv], env, log, cwd).start()
        self.procs.append(proc)
        return proc

    def kill(self) -> None:
        """Every process of the host SIGKILLed at once."""
        for proc in self.procs:
            proc.signal_group(signal.SIGKILL)
        for proc in self.procs:
            proc.kill()
        self.procs.clear()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def link_down(self) -> None:
        ip("link", "set", self._link, "down")

    def link_up(self) -> None:
        ip("link", "set", self._link, "up")


@dataclass
class Network:
    """A bridge with the machine on `.1`, and the hosts linked to it."""

    number: int
    log_dir: Path
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.number}br"

    @property
    def prefix(self) -> str:
        return f"10.77.{self.number}"

    @property
    def cidr(self) -> str:
        return f"{self.prefix}.0/24"

    def add_host(self, name: str, number: int) -> Host:
        host = Host(self, name, number)
        host.create()
        self.hosts[name] = host
        return host


@contextmanager
def network(log_dir: Path) -> Iterator[Network]:
    """A new network; on exit every process in it is stopped and every host removed."""
    number = _claim_network()
    net = Network(number, log_dir)
    try:
        ip("addr", "add", f"{net.prefix}.1/24", "dev", net.bridge)
        ip("link", "set", net.bridge, "up")
        yield net
    finally:
        for host in net.hosts.values():
            host.stop()
        _remove_network(number)
