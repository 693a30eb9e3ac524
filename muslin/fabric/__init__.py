"""muslin-flanneld: a flannel-compatible overlay agent (subnet leases in etcd, vxlan / host-gw / udp)."""
