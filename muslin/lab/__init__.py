"""The multi-host lab: simulated hosts in network namespaces, an etcd cluster across them."""
