#!/usr/bin/env bash
# Stop the Slurm that tests/slurm/start_local_slurm.sh started (its pid files; munged by its pid file).
set -u
for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
exit 0
