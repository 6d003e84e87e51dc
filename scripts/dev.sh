#!/usr/bin/env bash
# The one entry point for a developer machine and for CI:
#   bash scripts/dev.sh setup   install what is missing (Debian packages, binfmt, .venv)
#   bash scripts/dev.sh demo    set up, then run `tinyfleet demo`
#   bash scripts/dev.sh test    set up, then run the whole test suite (unit + integration)
#   bash scripts/dev.sh bench   set up, then run the benchmarks under bench/
# Extra arguments go to the command (e.g. `bash scripts/dev.sh test -k protocol`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${TINYFLEET_VENV:-$ROOT/.venv}

APT_PACKAGES=(
  mosquitto mosquitto-clients        # the broker
  docker.io                          # dockerd, containerd, runc
  docker-registry                    # distribution registry
  qemu-user-static                   # run arm64 / arm containers on x86
  gcc libc6-dev gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf gcc-arm-linux-gnueabi  # static demo binaries
  libc6-dev-arm64-cross libc6-dev-armhf-cross libc6-dev-armel-cross
  mtools dosfstools fdisk            # FAT boot partitions, partition tables
  socat xz-utils zip unzip           # serial consoles, compressed images
  iproute2 procps ca-certificates
  python3 python3-venv python3-pip
  sudo                               # serial provisioning tests: a Raspberry-Pi-OS-like sudoer on the test board
)
# binary -> package, to decide quickly whether apt-get has work to do
CHECKS=(mosquitto:mosquitto mosquitto_pub:mosquitto-clients dockerd:docker.io docker-registry:docker-registry
        qemu-aarch64-static:qemu-user-static aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu
        arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf arm-linux-gnueabi-gcc:gcc-arm-linux-gnueabi
        mcopy:mtools mkfs.vfat:dosfstools sfdisk:fdisk socat:socat xz:xz-utils zip:zip unzip:unzip ip:iproute2
        gcc:gcc sudo:sudo)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; exit 1; fi
}

install_packages() {
  local missing=()
  for pair in "${CHECKS[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  log "installing Debian packages (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
}

stop_system_services() {
  # Debian starts the packaged daemons; tinyfleet runs its own private instances instead.
  for svc in mosquitto docker containerd docker-registry; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
}

make_venv() {
  local stamp="$VENV/.tinyfleet-installed"
  local want
  want=$(sha256sum pyproject.toml | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  log "creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[dev]"
  echo "$want" > "$stamp"
}

setup() {
  install_packages
  stop_system_services
  make_venv
}

cmd=${1:-setup}
shift || true
case "$cmd" in
  setup) setup ;;
  demo)  setup; exec "$VENV/bin/tinyfleet" demo "$@" ;;
  test)  setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) setup; exec "$VENV/bin/python" -m bench "$@" ;;
  *) echo "usage: bash scripts/dev.sh {setup|demo|test|bench} [args...]" >&2; exit 2 ;;
esac
