#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist package (IDX files under /usr/share/datasets/fashion-mnist) when it is
# missing and apt is available. Elsewhere it only says how to point menas at your own copy (--root).
set -u
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  exit 0
fi
exec bash "$(dirname "$0")/apt-install.sh" fashion-mnist dataset-fashion-mnist \
  "download the IDX files yourself and pass --root DIR"
