#!/usr/bin/env bash
# The one entry point for a developer machine and for CI:
#   bash scripts/dev.sh setup   install what is missing (Debian packages, binfmt, .venv)
#   bash scripts/dev.sh demo    set up, then run the demo (python -m sandbox.demo)
#   bash scripts/dev.sh test    set up, then run the whole test suite (unit + integration)
#   bash scripts/dev.sh bench   set up, then run the benchmarks under bench/
#   bash scripts/dev.sh e2e-boot  set up (plus qemu-system-arm, debootstrap), build the Pi-like arm64 image
#                               (root file system cached under /var/cache/tinyfleet), flash it, boot it
#                               under qemu-system-aarch64 and check the board comes online (~20-30 min)
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
  chromium chromium-driver           # the dashboard's browser test (headless, driven by selenium)
  postgresql                         # the PostgreSQL store's tests and benchmarks (a private cluster each)
)
# only for `e2e-boot`: the Pi-like image (debootstrap, ext4 from a directory) and booting it
BOOT_PACKAGES=(qemu-system-arm debootstrap e2fsprogs openssh-client socat mtools dosfstools fdisk xz-utils
               qemu-user-static)
BOOT_CHECKS=(qemu-system-aarch64:qemu-system-arm debootstrap:debootstrap mkfs.ext4:e2fsprogs ssh:openssh-client
             ssh-keygen:openssh-client)
PI_CACHE=${TINYFLEET_IMAGE_CACHE:-/var/cache/tinyfleet}
# binary -> package, to decide quickly whether apt-get has work to do
CHECKS=(mosquitto:mosquitto mosquitto_pub:mosquitto-clients dockerd:docker.io docker-registry:docker-registry
        qemu-aarch64-static:qemu-user-static aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu
        arm-linux-gnueabihf-gcc:gcc-arm-linux-gnueabihf arm-linux-gnueabi-gcc:gcc-arm-linux-gnueabi
        mcopy:mtools mkfs.vfat:dosfstools sfdisk:fdisk socat:socat xz:xz-utils zip:zip unzip:unzip ip:iproute2
        gcc:gcc sudo:sudo chromium:chromium chromedriver:chromium-driver)

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*"; exit 1; fi
}

# install_missing WHAT CHECKS PACKAGES: apt-get install PACKAGES (array names) when a binary named in
# CHECKS (binary:package pairs) is missing; nothing, not even apt-get update, when all are there.
install_missing() {
  local what=$1; local -n checks=$2 packages=$3; shift 3
  local missing=("$@")
  for pair in "${checks[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  log "installing Debian packages$what (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

install_packages() {
  local extra=()
  python3 -c 'import venv, ensurepip' 2>/dev/null || extra+=(python3-venv)
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || extra+=(postgresql)  # not on PATH
  install_missing "" CHECKS APT_PACKAGES "${extra[@]}"
}

install_boot_packages() { install_missing " for e2e-boot" BOOT_CHECKS BOOT_PACKAGES; }

pi_image() {
  # The image is rebuilt when its recipe changes; its root file system has its own cache (see the script).
  local image="$PI_CACHE/pi-bookworm-arm64.img.xz" stamp want
  stamp="$image.recipe"
  want=$(sha256sum scripts/build-pi-image.sh | cut -c1-16)
  if [ ! -f "$image" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -c 'from sandbox import binfmt; binfmt.ensure()'
    as_root bash scripts/build-pi-image.sh "$image" >&2
    echo "$want" | as_root tee "$stamp" >/dev/null
  fi
  echo "$image"
}

stop_system_services() {
  # Debian starts the packaged daemons; tinyfleet runs its own private instances instead.
  for svc in mosquitto docker containerd docker-registry postgresql; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
}

pip_install() {
  # A pip configuration naming a local index (extra-index-url file:///...) that this machine lacks makes pip
  # warn once per package looked up - nothing a user of this script can act on. Those lines alone are
  # dropped; every other line (errors included) and pip's exit status come through. setuptools'
  # "Editable installation" notice (a caution about same-named folders in the working directory) is silenced.
  { PYTHONWARNINGS="ignore:Editable installation:UserWarning${PYTHONWARNINGS:+,$PYTHONWARNINGS}" \
      "$VENV/bin/pip" install -q "$@" 2>&1 1>&3 3>&- |
      sed -E "/^WARNING: Location 'file:[^']*' is ignored: it is (neither a file nor a directory|either a non-existing path or lacks a specific scheme)\.$/d" >&2
  } 3>&1
}

make_venv() {
  local stamp="$VENV/.tinyfleet-installed"
  local want
  want=$(sha256sum pyproject.toml | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  log "creating $VENV"
  python3 -m venv "$VENV"
  pip_install --upgrade pip
  pip_install -e ".[dev]"
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
  demo)  setup; exec "$VENV/bin/python" -m sandbox.demo "$@" ;;
  test)  setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  bench) setup; exec "$VENV/bin/python" -m bench "$@" ;;
  e2e-boot)
    setup; install_boot_packages
    start=$(date +%s)
    image=$(pi_image)
    log "Pi-like image ready in $(( $(date +%s) - start )) s: $image"
    TINYFLEET_PI_IMAGE=$image exec "$VENV/bin/python" -m pytest tests/e2e/boot_e2e.py -s --timeout 3600 "$@" ;;
  *) echo "usage: bash scripts/dev.sh {setup|demo|test|bench|e2e-boot} [args...]" >&2; exit 2 ;;
esac
