"""``--opt encrypted`` on an overlay network: refused before anything is stored, with what the kernel lacks
for IPsec ESP when it lacks it (found out here independently, with iproute2 in a scratch namespace); an
unencrypted overlay beside it is unaffected, and no engine leaves an XFRM state or policy behind."""

from __future__ import annotations

import docker
import pytest

from muslin.lab.rig import in_ns, wait_for

from .test_cluster_store import SHOWS_UP, listed


def esp_refused_by_kernel(ns: str) -> str:
    """iproute2's answer to adding libnetwork's ESP state ("" when the kernel takes it; then removed)."""
    added = in_ns(ns, "ip", "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "spi",
                  "0x100", "reqid", "1", "mode", "transport", "aead", "rfc4106(gcm(aes))", "0x" + "01" * 20, "64")
    in_ns(ns, "ip", "xfrm", "state", "flush")
    return "" if added.returncode == 0 else added.stderr.strip()


def xfrm_of(ns: str) -> str:
    return in_ns(ns, "ip", "xfrm", "state").stdout + in_ns(ns, "ip", "xfrm", "policy").stdout


def test_encrypted_overlay_is_refused_and_nothing_is_stored(make_cluster, make_netns):
    kernel_says = esp_refused_by_kernel(make_netns())
    cluster = make_cluster(2)
    one, two = cluster.engines
    hosts = [h.name for h in cluster.underlay.hosts]

    refused = one.docker("network", "create", "-d", "overlay", "--opt", "encrypted", "sec", check=False)
    assert refused.returncode != 0
    if kernel_says:
        # dockerd's words for a host without IPsec, and the missing piece the kernel named
        assert "cannot create secure network: required modules to install IPSEC rules are missing on host" \
            in refused.stderr, refused.stderr
        assert ("CONFIG_CRYPTO_GCM" in refused.stderr) == ("AEAD algorithm not found" in kernel_says)
        api = docker.APIClient(base_url=f"unix://{two.sock}")
        with pytest.raises(docker.errors.APIError) as again:
            api.create_network("sec", driver="overlay", options={"encrypted": ""})
        assert again.value.status_code == 403
    else:
        assert "encrypted overlay networks (IPsec ESP between engines) are not supported" in refused.stderr
    assert "sec" not in cluster.etcdctl("get", "--prefix", "--keys-only", "/docker/network/v1.0/")
    assert listed(one, "sec") is None and listed(two, "sec") is None
    assert [xfrm_of(h).strip() for h in hosts] == ["", ""]

    # a plain overlay beside it: created, seen by the other engine, its traffic plain VXLAN as before
    one.docker("network", "create", "-d", "overlay", "ov1")
    wait_for(lambda: listed(two, "ov1"), SHOWS_UP, "ov1 on the second engine")
    one.docker("run", "-d", "--name", "plain1", "--network", "ov1", "busybox", "sleep", "300")
    ip = one.docker("inspect", "-f", "{{.NetworkSettings.Networks.ov1.IPAddress}}", "plain1").stdout.strip()
    out = two.docker("run", "--rm", "--network", "ov1", "busybox", "sh", "-c",
                     f"cat /sys/class/net/eth0/mtu; ping -c1 -W2 {ip}")
    assert out.stdout.startswith("1450\n") and " 0% packet loss" in out.stdout
    one.docker("rm", "-f", "plain1")
    one.docker("network", "rm", "ov1")
    assert [xfrm_of(h).strip() for h in hosts] == ["", ""]
