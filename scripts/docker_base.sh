#!/usr/bin/env bash
# Make a local stand-in for the Dockerfile's base image (tensorflow/tensorflow:<pin>-gpu) where
# no image registry is reachable, so that `bash build.sh` runs unchanged: a Debian root made by
# debootstrap (bookworm: Python 3.11) with this machine's CA bundle and pip configuration (the
# way it reaches PyPI), imported into Docker, then TensorFlow at the pinned version from PyPI.
# It has no CUDA: it stands in for the GPU image on a CPU, for building and testing.
# Usage: bash scripts/docker_base.sh [--force]   (bash scripts/docker_base.sh --help)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=bookworm
ROOT_IMAGE=tensorguess-stand-in/debian:$SUITE
WORK=${TENSORGUESS_BASE_WORKDIR:-/var/tmp/tensorguess-stand-in}
STAND_IN_LABEL=org.tensorguess.stand-in
# shellcheck source=scripts/docker_steps.sh
source "$ROOT/scripts/docker_steps.sh"

force=0
case "${1:-}" in
  -h | --help)
    cat <<USAGE
usage: bash scripts/docker_base.sh [--force]

Builds a local stand-in for the Dockerfile's FROM image (no registry needed): a
Debian $SUITE root from debootstrap, with this machine's CA bundle and pip
configuration, imported as $ROOT_IMAGE, then TensorFlow at the version
constraints.txt pins, tagged as the FROM line names it. Needs root, debootstrap and
a running Docker engine; reaches Debian's mirror (as apt does here) and PyPI.
Does nothing when the image is there already; --force makes both images again.
TENSORGUESS_DEBIAN_MIRROR overrides the mirror read from apt's sources, and
TENSORGUESS_BASE_WORKDIR the scratch folder (default /var/tmp/tensorguess-stand-in).
USAGE
    exit 0
    ;;
  --force) force=1 ;;
  "") ;;
  *) fail "unknown argument '$1' (see --help)" ;;
esac

base_image=$(sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]\{1,\}\).*/\1/p' "$ROOT/Dockerfile" | head -n 1)
[ -n "$base_image" ] || fail "no FROM line in $ROOT/Dockerfile"
pin=$(sed -n 's/^tensorflow==//p' "$ROOT/constraints.txt")
[ -n "$pin" ] || fail "constraints.txt pins no tensorflow==VERSION"

command -v docker >/dev/null 2>&1 || fail "docker is not installed (apt-get install -y docker.io)"
docker info >/dev/null 2>&1 ||
  fail "no Docker engine answers 'docker info'; start one, e.g. dockerd --bridge=none --iptables=false --ip-masq=false &"

# image_label IMAGE: print the stand-in label of IMAGE (empty for an image that is not ours),
# or fail when there is no such image.
image_label() {
  docker image inspect --format "{{index .Config.Labels \"$STAND_IN_LABEL\"}}" "$1" 2>/dev/null
}

if [ "$force" = 0 ] && label=$(image_label "$base_image"); then
  case "$label" in
    "") say "$base_image is a real image, not a stand-in: nothing to do" ;;
    "tensorflow==$pin") say "the stand-in $base_image is there already (--force makes it again)" ;;
    *) fail "$base_image is a stand-in with $label, not tensorflow==$pin: run again with --force" ;;
  esac
  exit 0
fi

[ "$(id -u)" = 0 ] || fail "debootstrap needs root: run it as root (sudo bash scripts/docker_base.sh)"
command -v debootstrap >/dev/null 2>&1 || fail "debootstrap is not installed (apt-get install -y debootstrap)"

# The Debian mirror apt uses here (deb822 or one-line sources), not the security archive.
debian_mirror() {
  if [ -n "${TENSORGUESS_DEBIAN_MIRROR:-}" ]; then
    echo "$TENSORGUESS_DEBIAN_MIRROR"
    return
  fi
  local found
  found=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
      -e 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\2/p' |
    grep -v -e security -e '^cdrom:' | head -n 1 || true)
  echo "${found:-http://deb.debian.org/debian}"
}

# Apt's proxy, if it has one, for debootstrap's downloads (plain environment variables).
apt_proxy() {
  apt-config dump 2>/dev/null | sed -n "s/^Acquire::$1::Proxy \"\(.*\)\";$/\1/p" | head -n 1
}

# write_pip_config ROOTFS: this machine's pip configuration into the root, with the PIP_*
# variables that say how to reach the index written into its /etc/pip.conf, and the files
# those settings name (the CA bundle, a client certificate, constraints) copied along.
write_pip_config() {
  local rootfs=$1
  python3 - "$rootfs" <<'PYTHON'
import configparser
import os
import shutil
import sys
from pathlib import Path

rootfs = Path(sys.argv[1])
# Variables that decide whether and how PyPI is reached, not what gets installed.
REACH = ["index-url", "extra-index-url", "trusted-host", "cert", "client-cert", "proxy",
         "timeout", "default-timeout", "retries"]
FILE_SETTINGS = {"cert", "client-cert", "constraint"}


def copy_in(path: str) -> None:
    source = Path(path)
    if source.is_file():
        target = rootfs / source.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


for name in ("etc/pip.conf", "etc/xdg/pip/pip.conf"):
    host = Path("/") / name
    if not host.is_file():
        continue
    config = configparser.ConfigParser()
    config.read(host)
    for section in config.sections():
        for key, value in config.items(section):
            if key in FILE_SETTINGS:
                for path in value.split():
                    copy_in(path)
    if name == "etc/pip.conf":
        for key in REACH:
            value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
            if value:
                config.setdefault("global", {})
                config.set("global", key, value)
                if key in FILE_SETTINGS:
                    copy_in(value)
    target = rootfs / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w") as out:
        config.write(out)
    print(f"docker_base: pip configuration {host} copied in", file=sys.stderr)
PYTHON
}

# run_debootstrap ROOTFS MIRROR: a minimal Debian root with Python and pip, its log kept.
run_debootstrap() {
  local proxy
  proxy=$(apt_proxy http)
  env ${proxy:+http_proxy="$proxy"} ${proxy:+https_proxy="$(apt_proxy https)"} \
    debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates \
    "$SUITE" "$1" "$2" >"$WORK/debootstrap.log" 2>&1
}

# import_root ROOTFS: the root as an image; /dev, /proc and /sys come from Docker at run time.
import_root() {
  tar -C "$1" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
    docker import --change "ENV LANG=C.UTF-8" --change 'CMD ["bash"]' - "$ROOT_IMAGE" >/dev/null
}

make_root_image() {
  local rootfs=$WORK/rootfs mirror
  mirror=$(debian_mirror)
  rm -rf "$rootfs"
  mkdir -p "$WORK"
  say "debootstrap $SUITE from $mirror into $rootfs"
  if ! timed debootstrap run_debootstrap "$rootfs" "$mirror"; then
    tail -n 20 "$WORK/debootstrap.log" >&2
    fail "debootstrap failed (full log: $WORK/debootstrap.log)"
  fi
  # This machine's CA bundle: the registries may be reached through a CA of its own.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
  write_pip_config "$rootfs"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  timed "docker import" import_root "$rootfs"
  rm -rf "$rootfs"
}

if [ "$force" = 1 ] || ! docker image inspect "$ROOT_IMAGE" >/dev/null 2>&1; then
  make_root_image
else
  say "$ROOT_IMAGE is there already"
fi

# TensorFlow's own image installs it into the system Python as root; so does the stand-in.
# The host's network: the engine runs without a bridge (no traffic to private addresses).
timed "pip install tensorflow==$pin" docker build --network host --tag "$base_image" \
  --label "$STAND_IN_LABEL=tensorflow==$pin" - <<DOCKERFILE
FROM $ROOT_IMAGE
RUN PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --no-cache-dir tensorflow==$pin \
 && python3 -c 'import importlib.metadata as m; print("tensorflow", m.version("tensorflow"))'
DOCKERFILE
say "built the stand-in $base_image (tensorflow==$pin on Debian $SUITE)"
