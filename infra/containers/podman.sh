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
BASE="${DRIFTLOOP_LOCAL_BASE:-localhost/driftloop/debian-python:bookworm}"
SOCKET="${DRIFTLOOP_PODMAN_SOCKET:-$STATE/podman.sock}"
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
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1 \
    bookworm "$rootfs" http://deb.debian.org/debian >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log"; exit 1; }
  tar -C "$rootfs" -c . | podman_ import --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  echo "base image $BASE: made"
}

build_flows() {
  local tag="${1:?usage: $0 build-flows TAG}"
  configure
  # pip inside the build goes through this machine's TLS proxy: the host's CA bundle, mounted read-only
  podman_ build --network host \
    --build-arg BASE_IMAGE="$BASE" \
    --build-arg PIP_CERT=/etc/ssl/certs/host-ca.crt \
    --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/host-ca.crt:ro \
    -f infra/docker/flows.Dockerfile -t "$tag" .
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
