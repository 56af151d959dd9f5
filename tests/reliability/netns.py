"""Hosts of their own: one network namespace per "host", joined to the root namespace by a bridge.

Each host is a namespace with a veth pair: one end (``<name>b``) in the namespace with the
host's address, the other (``<name>a``) on a bridge in the root namespace that carries the
bridge's address (``gateway``). A process started through :meth:`Hosts.command` sees only its
host's loopback and veth: it reaches the root namespace (where a proxy forwards to PostgreSQL on
127.0.0.1) at ``gateway``, over its veth, and only there.

:meth:`Hosts.partition` sets the host's root-side veth down: every packet either way is dropped
without a word (the host's side keeps its address and route; TCP retransmits into the void),
and :meth:`Hosts.heal` sets it up again, so that retransmitted bytes arrive. Names and the
subnet are unique per instance; :meth:`Hosts.close` removes all of them, and is safe to call
twice or after a failed setup. Needs root (``ip netns``).
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import uuid


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def available() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing: run tests/reliability/setup-system.sh"
    return None


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no interface of the root namespace uses."""
    used = _ip("-4", "-o", "addr", "show").stdout
    for _ in range(100):
        subnet = ipaddress.IPv4Network(f"10.{random.randint(64, 250)}.{random.randint(0, 255)}.0/24")
        first_three = str(subnet.network_address).rsplit(".", 1)[0]
        if f"inet {first_three}." not in used:
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 subnet")


class Hosts:
    """``count`` namespaces ("hosts") on one bridge; see the module docstring."""

    def __init__(self, count: int) -> None:
        if not 1 <= count <= 200:
            raise ValueError(f"between 1 and 200 hosts fit the /24 subnet, not {count}")
        tag = uuid.uuid4().hex[:6]
        self.bridge = f"pq{tag}br"
        self.names = [f"pq{tag}h{i}" for i in range(count)]
        subnet = _free_subnet()
        self.gateway = str(subnet.network_address + 1)
        self.addresses = {name: str(subnet.network_address + 10 + i) for i, name in enumerate(self.names)}
        self._made: list[tuple[str, str]] = []  # ("netns" | "link", name), for close()
        try:
            self._build(subnet.prefixlen)
        except BaseException:
            self.close()
            raise

    def _build(self, prefix: int) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", self.bridge))
        _ip("addr", "add", f"{self.gateway}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for name in self.names:
            _ip("netns", "add", name)
            self._made.append(("netns", name))
            _ip("link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b")
            self._made.append(("link", f"{name}a"))
            _ip("link", "set", f"{name}a", "master", self.bridge)
            _ip("link", "set", f"{name}a", "up")
            _ip("link", "set", f"{name}b", "netns", name)
            _ip("-n", name, "addr", "add", f"{self.addresses[name]}/{prefix}", "dev", f"{name}b")
            _ip("-n", name, "link", "set", f"{name}b", "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def command(self, host: str) -> list[str]:
        """The prefix that runs a program on ``host`` (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", host]

    def partition(self, host: str) -> None:
        """Drop every packet to and from ``host`` until :meth:`heal`."""
        _ip("link", "set", f"{host}a", "down")

    def heal(self, host: str) -> None:
        _ip("link", "set", f"{host}a", "up")

    def close(self) -> None:
        """Remove the namespaces, veths and bridge (what is already gone is skipped)."""
        for kind, name in reversed(self._made):
            if kind == "netns":
                _ip("netns", "del", name, check=False)
            else:
                _ip("link", "del", name, check=False)
        self._made.clear()
