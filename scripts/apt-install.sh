#!/usr/bin/env bash
# Installs one Debian package with apt-get when apt is available (as root, or through sudo); the callers
# (install-fashion-mnist.sh, install-chromium.sh) check first whether what it provides is already there.
# Usage: apt-install.sh LABEL PACKAGE HINT   (HINT: what to do instead where apt cannot install it)
set -u
label=$1 package=$2 hint=$3
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$label: no apt here; $hint" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "$label: not installed and not root; run 'apt-get install $package', or $hint" >&2
    exit 0
  fi
fi
echo "$label: installing Debian package $package" >&2
$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$package" >/dev/null
