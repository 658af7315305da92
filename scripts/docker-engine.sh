#!/usr/bin/env bash
# Start a Docker engine for the Docker extraction backend unless one already answers; wait until it does.
#
# Machines here run no engine by default and have no service manager to start one, so dockerd is started
# in the background (log: ${DOCKERD_LOG:-/tmp/dockerd.log}). Needs root and docker.io installed.
set -euo pipefail

LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"

if docker info >/dev/null 2>&1; then
  echo "Docker engine already running"
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "dockerd is missing: apt-get install -y docker.io" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "dockerd needs root: run this script with sudo" >&2
  exit 1
fi

nohup dockerd >"$LOG" 2>&1 &
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    echo "Docker engine started in ${SECONDS}s (log: $LOG)"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 30 s; the end of $LOG:" >&2
tail -n 20 "$LOG" >&2
exit 1
