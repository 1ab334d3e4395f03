#!/usr/bin/env bash
# Containers on a machine with no Docker daemon: podman, set up once (see README, "Run it in containers").
#
#   infra/containers/podman.sh setup              install podman (Debian packages), make the local base image
#   infra/containers/podman.sh build-flows TAG    build the flow image (infra/docker/flows.Dockerfile) on it
#   infra/containers/podman.sh socket             serve the Docker API on $DRIFTLOOP_PODMAN_SOCKET
#
# Every podman command reads its configuration from $STATE (export CONTAINERS_CONF and
# CONTAINERS_STORAGE_CONF as this script does to use the same images: `make images` does).
#
# What this machine needs (checked 2026-12-02, ../shared/notes/stack-facts.md): the runc runtime and the
# cgroupfs manager (crun fails here), no default ulimits, native overlay storage where the kernel has it
# (checked 2026-12-03; vfs otherwise); and, since no public
# image registry is reachable, a base image made from Debian packages (debootstrap). With Docker and a
# registry, none of this is needed: the Dockerfiles' default base is the public python image.
set -euo pipefail

STATE="${DRIFTLOOP_PODMAN_STATE:-/var/tmp/driftloop-podman}"
BASE="${DRIFTLOOP_LOCAL_BASE:-localhost/driftloop/python:3.11-bookworm}"
SOCKET="${DRIFTLOOP_PODMAN_SOCKET:-$STATE/podman.sock}"
PUBLIC_NAMES="docker.io/library/python:3.11-slim docker.io/library/python:3.11.7-slim-bookworm"
export CONTAINERS_CONF="$STATE/containers.conf" CONTAINERS_STORAGE_CONF="$STATE/storage.conf"

podman_() { podman "$@"; }

configure() {
  mkdir -p "$STATE"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
    > "$CONTAINERS_CONF"
  [ -f "$CONTAINERS_STORAGE_CONF" ] && return
  # overlay where the kernel offers it natively (layers shared, builds fast), else vfs (a full copy
  # of every layer: slow, and gigabytes per image)
  local driver=vfs
  if env -u CONTAINERS_STORAGE_CONF podman --storage-driver overlay --root "$STATE/probe" \
      --runroot "$STATE/probe-run" info 2>/dev/null \
      | grep -q 'Native Overlay Diff: "true"'; then
    driver=overlay
  fi
  rm -rf "$STATE/probe" "$STATE/probe-run"
  printf '[storage]\ndriver = "%s"\nrunroot = "%s/run"\ngraphroot = "%s/storage"\n' "$driver" "$STATE" "$STATE" \
    > "$CONTAINERS_STORAGE_CONF"
  echo "podman storage: $driver in $STATE/storage"
}

setup() {
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "installing podman, runc and debootstrap (Debian packages)..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null 2>&1 \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null; }
  fi
  configure
  if podman_ image exists "$BASE"; then
    echo "base image $BASE: present"
    return
  fi
  echo "making the base image $BASE from Debian packages (debootstrap, ~2 min)..."
  local rootfs="$STATE/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log"; exit 1; }
  # Laid out like the public python image: `python` and `pip` in /usr/local/bin, installs allowed (a
  # venv over /usr/local; Debian's own Python refuses pip installs). Nothing else: each image installs
  # the OS packages it needs itself (libgomp1 for LightGBM), as it must on the public base.
  chroot "$rootfs" /usr/bin/python3 -m venv /usr/local >>"$STATE/debootstrap.log" 2>&1
  # This machine reaches package indexes through a TLS proxy: its CA bundle, for pip and uv
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/host-ca.crt"
  tar -C "$rootfs" -c . | podman_ import \
    --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/host-ca.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt' \
    --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  # It stands in for the public images the Dockerfiles name: BentoML's generated one (python:3.11-slim)
  # and ours (its default BASE_IMAGE), so both build unchanged here.
  for public in $PUBLIC_NAMES; do podman_ tag "$BASE" "$public"; done
  echo "base image $BASE: made (also tagged $PUBLIC_NAMES)"
}

build_flows() {
  local tag="${1:?usage: $0 build-flows TAG}"
  configure
  # --network host: pip inside the build reaches the package index as this machine does
  podman_ build --network host -f infra/docker/flows.Dockerfile -t "$tag" .
  podman_ image prune -f >/dev/null  # drop the layers the new build replaced
}

socket() {
  configure
  mkdir -p "$(dirname "$SOCKET")"
  podman_ system service --time=0 "unix://$SOCKET" &
  echo $! > "$STATE/podman-service.pid"
  for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
  echo "Docker API on unix://$SOCKET (pid $(cat "$STATE/podman-service.pid"))"
}

case "${1:-}" in
  setup) setup ;;
  build-flows) build_flows "${2:-}" ;;
  socket) socket ;;
  *) echo "usage: $0 setup|build-flows TAG|socket" >&2; exit 2 ;;
esac
