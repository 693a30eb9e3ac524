#!/bin/sh
# The init of a User-Mode Linux guest that runs a pytest selection of this repository on a kernel with
# what this machine's lacks (ESP, AES-GCM: Debian's UML kernel has them as modules). The root is the
# machine's own files, read-only (hostfs); /tmp, /run and /mnt are the guest's tmpfs; the guest has no
# network device to the outside. The kernel's command line gives MUSLIN_PYTHON, MUSLIN_REPO and
# MUSLIN_ARGS_FILE (pytest's arguments, one a line) as the environment. Started by tests/uml_pytest.py.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /mnt
mount -t cgroup2 none /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm /run/netns /mnt/bin
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# this UML kernel has no nf_tables for IPv4: the legacy iptables, under the names muslin runs
for t in iptables iptables-save iptables-restore; do
  ln -s "/usr/sbin/$(echo $t | sed 's/iptables/iptables-legacy/')" "/mnt/bin/$t"
done
"$MUSLIN_PYTHON" -B "$MUSLIN_REPO/tests/integration/uml_guest/modules.py" --all
cp "$MUSLIN_ARGS_FILE" /mnt/pytest-args  # read before /tmp, where it is, is covered by the guest's own
mount -t tmpfs tmpfs /tmp
mkdir -p /tmp/home
export PATH=/mnt/bin:$PATH HOME=/tmp/home TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1 MUSLIN_SHARED_DEV_MACHINE=1
export MUSLIN_TEST_START_LIMIT=180  # a muslind's start, slow here
ip link set lo up
cd "$MUSLIN_REPO"
set -f  # the arguments, one a line, as they are: no globbing, no other splitting
IFS='
'
set -- $(cat /mnt/pytest-args)
unset IFS
"$MUSLIN_PYTHON" -m pytest -p no:cacheprovider "$@"
echo "UML-PYTEST-EXIT $?"
poweroff -f
