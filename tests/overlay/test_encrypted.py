"""``--opt encrypted`` overlays: IPsec ESP between the engines where the kernel has it, a refusal in dockerd's
words where it does not (found out here independently, with iproute2 in a scratch namespace); a plain
overlay beside it stays plain VXLAN on the wire (a raw capture on the underlay), and no engine leaves an
XFRM state or policy, or its iptables chain, behind."""

from __future__ import annotations

import json
import signal

import docker
import pytest

from muslin.engine.overlay_encryption import CHAIN
from muslin.lab.rig import in_ns, wait_for

from .capture import Capture
from .test_cluster_store import SHOWS_UP, listed

ESP = 50
UDP = 17
SEC_VNI, PLAIN_VNI = 5001, 5002
VNI_OPT = "com.docker.network.driver.overlay.vxlanid_list"
HTTPD = "mkdir /www; echo hello-{0} > /www/index.html; httpd -f -h /www"


def esp_refused_by_kernel(ns: str) -> str:
    """iproute2's answer to adding libnetwork's ESP state ("" when the kernel takes it; then removed)."""
    added = in_ns(ns, "ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi",
                  "0x100", "reqid", "1", "mode", "transport", "aead", "rfc4106(gcm(aes))", "0x" + "01" * 20, "64")
    in_ns(ns, "ip", "xfrm", "state", "flush")
    return "" if added.returncode == 0 else added.stderr.strip()


def ipsec_of(ns: str) -> tuple[str, str, bool]:
    """The namespace's XFRM states, policies, and whether muslind's iptables chain is there."""
    chains = in_ns(ns, "iptables-save").stdout
    return (in_ns(ns, "ip", "xfrm", "state").stdout.strip(), in_ns(ns, "ip", "xfrm", "policy").stdout.strip(),
            CHAIN in chains)


NOTHING = ("", "", False)


def test_plain_overlay_stays_plain_vxlan_on_the_underlay(shared_cluster):
    cluster = shared_cluster
    one, two = cluster.engines
    host1 = cluster.underlay.hosts[0]
    one.docker("network", "create", "-d", "overlay", "-o", f"{VNI_OPT}={PLAIN_VNI}", "plain")
    wait_for(lambda: listed(two, "plain"), SHOWS_UP, "plain on the second engine")
    one.docker("run", "-d", "--name", "p1", "--network", "plain", "busybox", "sh", "-c", HTTPD.format("p1"))
    capture = Capture(host1.name, host1.iface).start()
    try:
        out = two.docker("run", "--rm", "--network", "plain", "busybox", "wget", "-qO-", "http://p1/")
    finally:
        seen = capture.stop()
    assert out.stdout == "hello-p1\n"
    assert seen[(UDP, PLAIN_VNI)] > 0 and seen[(ESP, None)] == 0, seen
    assert [ipsec_of(h.name) for h in cluster.underlay.hosts] == [NOTHING, NOTHING]
    one.docker("rm", "-f", "p1")
    one.docker("network", "rm", "plain")


def test_encrypted_overlay_refused_on_a_kernel_without_esp(shared_cluster, make_netns):
    kernel_says = esp_refused_by_kernel(make_netns())
    if not kernel_says:
        pytest.skip("this kernel has ESP: test_encrypted_overlay_in_esp_beside_a_plain_one covers it")
    cluster = shared_cluster
    one, two = cluster.engines
    hosts = [h.name for h in cluster.underlay.hosts]

    refused = one.docker("network", "create", "-d", "overlay", "--opt", "encrypted", "sec", check=False)
    assert refused.returncode != 0
    # dockerd's words for a host without IPsec, and the missing piece the kernel named
    assert "cannot create secure network: required modules to install IPSEC rules are missing on host" \
        in refused.stderr, refused.stderr
    assert ("CONFIG_CRYPTO_GCM" in refused.stderr) == ("AEAD algorithm not found" in kernel_says)
    api = docker.APIClient(base_url=f"unix://{two.sock}")
    with pytest.raises(docker.errors.APIError) as again:
        api.create_network("sec", driver="overlay", options={"encrypted": ""})
    assert again.value.status_code == 403
    assert "sec" not in cluster.etcdctl("get", "--prefix", "--keys-only", "/muslin/network/v1.0/")
    assert listed(one, "sec") is None and listed(two, "sec") is None

    # an encrypted network that an engine with ESP would have made: listed here, but no container joins it
    one.docker("network", "create", "-d", "overlay", "carrier")
    doc = json.loads(cluster.etcdctl("get", "--print-value-only", "/muslin/network/v1.0/network/"
                                     + json.loads(one.docker("network", "inspect", "carrier").stdout)[0]["Id"]))
    one.docker("network", "rm", "carrier")
    doc.update(id="e" * 64, name="sec", options={"encrypted": ""})
    cluster.etcdctl("put", "/muslin/network/v1.0/network/" + "e" * 64, json.dumps(doc))
    wait_for(lambda: listed(two, "sec"), SHOWS_UP, "the encrypted network on the second engine")
    joined = two.docker("run", "--rm", "--network", "sec", "busybox", "true", check=False)
    assert joined.returncode != 0
    assert "cannot join secure network: required modules to install IPSEC rules are missing on host" in joined.stderr
    assert "encryption/key" not in cluster.etcdctl("get", "--prefix", "--keys-only", "/muslin/network/v1.0/")
    two.docker("network", "rm", "sec")
    wait_for(lambda: listed(one, "sec") is None, SHOWS_UP, "the encrypted network gone from the first engine")
    assert [ipsec_of(h) for h in hosts] == [NOTHING, NOTHING]


def test_encrypted_overlay_in_esp_beside_a_plain_one(make_cluster, make_netns):
    kernel_says = esp_refused_by_kernel(make_netns())
    if kernel_says:
        pytest.skip(f"this kernel cannot hold an ESP state with rfc4106(gcm(aes)): {kernel_says}")
    cluster = make_cluster(2)
    one, two = cluster.engines
    host1, host2 = cluster.underlay.hosts
    one.docker("network", "create", "-d", "overlay", "--opt", "encrypted", "-o", f"{VNI_OPT}={SEC_VNI}", "sec")
    one.docker("network", "create", "-d", "overlay", "-o", f"{VNI_OPT}={PLAIN_VNI}", "plain")
    wait_for(lambda: listed(two, "sec") and listed(two, "plain"), SHOWS_UP, "both networks on the second engine")
    assert "/muslin/network/v1.0/encryption/key" in cluster.etcdctl("get", "--prefix", "--keys-only",
                                                                   "/muslin/network/v1.0/encryption/")
    one.docker("run", "-d", "--name", "s1", "--network", "sec", "busybox", "sh", "-c", HTTPD.format("s1"))
    one.docker("run", "-d", "--name", "p1", "--network", "plain", "busybox", "sh", "-c", HTTPD.format("p1"))
    assert ipsec_of(host1.name)[:2] == ("", "")  # no engine shares sec with this one yet
    two.docker("run", "-d", "--name", "s2", "--network", "sec", "--network-alias", "s2", "busybox", "sleep", "600")
    two.docker("run", "-d", "--name", "p2", "--network", "plain", "busybox", "sleep", "600")

    def programmed(ns: str) -> bool:
        states, policies, chain = ipsec_of(ns)
        return states.count("proto esp") == 2 and policies.count("dir out") == 1 and chain

    wait_for(lambda: programmed(host1.name) and programmed(host2.name), SHOWS_UP, "IPsec between the engines")
    capture = Capture(host1.name, host1.iface).start()
    try:
        sec = two.docker("exec", "s2", "sh", "-c", "cat /sys/class/net/eth0/mtu; wget -qO- http://s1/")
        plain = two.docker("exec", "p2", "wget", "-qO-", "http://p1/")
    finally:
        seen = capture.stop()
    assert sec.stdout == "1424\nhello-s1\n" and plain.stdout == "hello-p1\n"
    assert seen[(ESP, None)] > 0 and seen[(UDP, SEC_VNI)] == 0 and seen[(UDP, PLAIN_VNI)] > 0, seen

    # a restart after a crash: the kernel's IPsec state lost meanwhile is put back from the store
    one.stop(signal.SIGKILL)
    in_ns(host1.name, "ip", "xfrm", "state", "flush")
    in_ns(host1.name, "ip", "xfrm", "policy", "flush")
    one = cluster.start_engine(0)
    wait_for(lambda: programmed(host1.name), SHOWS_UP, "IPsec back after the restart")
    assert two.docker("exec", "s2", "wget", "-qO-", "http://s1/").stdout == "hello-s1\n"

    # the last endpoint sharing sec goes: the SAs and policies go on both engines, the marks where sec
    # has no endpoint left
    two.docker("rm", "-f", "s2")
    wait_for(lambda: ipsec_of(host1.name) == ("", "", True) and ipsec_of(host2.name) == NOTHING, SHOWS_UP,
             "IPsec removed with the last shared endpoint")
    for d, names in ((one, ("s1", "p1")), (two, ("p2",))):
        d.docker("rm", "-f", *names)
    one.docker("network", "rm", "sec")
    one.docker("network", "rm", "plain")
    for d in (one, two):
        d.stop()
    assert [ipsec_of(h.name) for h in cluster.underlay.hosts] == [NOTHING, NOTHING]
