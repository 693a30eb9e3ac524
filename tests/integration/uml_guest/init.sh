#!/bin/sh
# The init of a throwaway User-Mode Linux guest (Debian's UML kernel has ESP, AES-GCM, vxlan and xt_u32 as
# modules) whose root is the host's own files, read-only (hostfs): runs esp_check.py, then powers off.
# The kernel hands its command line's NAME=VALUE words to init as the environment: MUSLIN_PYTHON,
# MUSLIN_REPO. Only tmpfs is written; the guest has no network device to the outside.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /mnt
mkdir -p /run/netns /mnt/bin /mnt/tmp
# this UML kernel has no nf_tables for IPv4: the legacy iptables, under the names muslin runs
for t in iptables iptables-save iptables-restore; do
  ln -s "/usr/sbin/$(echo $t | sed 's/iptables/iptables-legacy/')" "/mnt/bin/$t"
done
export PATH=/mnt/bin:$PATH TMPDIR=/mnt/tmp
"$MUSLIN_PYTHON" -B "$MUSLIN_REPO/tests/integration/uml_guest/modules.py" xfrm_user esp4 gcm ghash_generic ctr seqiv \
  drbg jitterentropy_rng hmac sha512_generic vxlan veth ip_tables iptable_mangle iptable_filter xt_u32 xt_policy \
  xt_mark xt_tcpudp
"$MUSLIN_PYTHON" -B "$MUSLIN_REPO/tests/integration/uml_guest/esp_check.py" 2>&1
echo "UML-GUEST-EXIT $?"
poweroff -f
