#!/usr/bin/env bash
# Installs Debian's dataset-fashion-mnist package (IDX files under /usr/share/datasets/fashion-mnist) when it is
# missing and apt is available. Elsewhere it only says how to point menas at your own copy (--root).
set -u
target=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ -f "$target" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "fashion-mnist: not installed and not root; run 'apt-get install dataset-fashion-mnist' or pass --root" >&2
      exit 0
    fi
  fi
  echo "fashion-mnist: installing Debian package dataset-fashion-mnist" >&2
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
  exit $?
fi
echo "fashion-mnist: no apt here; download the IDX files yourself and pass --root DIR" >&2
exit 0
