#!/usr/bin/env bash
# Installs Debian's chromium package (the headless browser of tests/test_browser.py) when no chromium binary is
# found and apt is available. Elsewhere the browser tests are skipped with a reason; MENAS_CHROMIUM=PATH names
# another Chromium or Chrome binary.
set -u
if [ -n "${MENAS_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 \
  || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "chromium: not installed and not root; run 'apt-get install chromium' (the browser tests are skipped)" >&2
      exit 0
    fi
  fi
  echo "chromium: installing Debian package chromium (for the browser tests)" >&2
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  exit $?
fi
echo "chromium: no apt here; install Chromium yourself or set MENAS_CHROMIUM (the browser tests are skipped)" >&2
exit 0
