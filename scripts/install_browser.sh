#!/usr/bin/env bash
# The browser test's browser: Debian's chromium and chromium-driver (tests/server/test_dashboard.py
# drives them with Selenium). Idempotent: nothing happens when both are installed. Needs root (or
# sudo) and Debian's package lists; elsewhere it says why it skipped, and the browser test skips.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install_browser.sh: no apt-get; install chromium and chromium-driver by hand" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "install_browser.sh: not root and no sudo; the browser test will skip" >&2
    exit 0
  fi
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
