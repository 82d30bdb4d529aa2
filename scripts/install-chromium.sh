#!/usr/bin/env bash
# Installs Debian's chromium package (the headless browser of tests/test_browser.py) when no chromium binary is
# found and apt is available; a failed install fails `make test`. Elsewhere the browser tests are skipped with a
# reason (failed under CI=true); MENAS_CHROMIUM=PATH names another Chromium or Chrome binary.
set -u
if [ -n "${MENAS_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 \
  || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
exec bash "$(dirname "$0")/apt-install.sh" chromium chromium \
  "install Chromium yourself or set MENAS_CHROMIUM (the browser tests are skipped)"
