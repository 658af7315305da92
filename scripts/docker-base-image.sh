#!/usr/bin/env bash
# Build the local base image of the Docker extraction backend (default runtool-base:bookworm).
#
# There is no container registry to pull from, so the base is a minimal Debian made with debootstrap
# and loaded with `docker import`. Idempotent: does nothing when the image already exists.
# Needs root (debootstrap) and a running Docker engine. Overrides: RUNTOOL_BASE_IMAGE, DEBIAN_SUITE,
# DEBIAN_MIRROR.
set -euo pipefail

IMAGE="${RUNTOOL_BASE_IMAGE:-runtool-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE already exists"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "debootstrap needs root: run this script with sudo" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "debootstrap is missing: apt-get install -y debootstrap" >&2
  exit 1
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
rootfs="$workdir/rootfs"

# python3-venv brings ensurepip, so the extractor image installs its wheels into a venv
# instead of fighting Debian's externally-managed system Python.
debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$rootfs" "$MIRROR"
# The downloaded .deb files and package lists are only needed to install, not to run.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$IMAGE" >/dev/null
echo "built $IMAGE in ${SECONDS}s ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
