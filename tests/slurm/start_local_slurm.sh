#!/usr/bin/env bash
# Start a one-node Slurm on this machine (slurmctld + slurmd + munge, node = this host) for
# tests/test_slurm.py. Idempotent: does nothing when `scontrol ping` already reports UP.
# Needs root; installs the Debian packages slurm-wlm and munge when they are missing.
# Stop it with tests/slurm/stop_local_slurm.sh.
set -euo pipefail

if command -v scontrol >/dev/null && scontrol ping 2>/dev/null | grep -q UP \
        && sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "local slurm: already up"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "local slurm: needs root (to install and start slurmctld, slurmd, munged)" >&2; exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

host="$(hostname -s)"
node="$(slurmd -C | head -n 1)"   # NodeName=<host> CPUs=... RealMemory=... as slurmd sees them
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<CONF
# written by tests/slurm/start_local_slurm.sh: one node, everything as root, no cgroups
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
KillWait=10
MinJobAge=300
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

# munge: a key, then the daemon (as the munge user when it exists)
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
if id munge >/dev/null 2>&1; then
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
else
    pgrep -x munged >/dev/null || /usr/sbin/munged --force
fi

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'; then
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
        echo "local slurm: up ($node)"; exit 0
    fi
    sleep 1
done
echo "local slurm: did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo -R >&2 || true
exit 1
