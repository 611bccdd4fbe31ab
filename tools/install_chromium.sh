#!/usr/bin/env bash
# Make a headless Chromium available for tests/test_demo_browser.py.
#
#   bash tools/install_chromium.sh        # prints the browser's path on success
#
# Uses an existing browser when there is one ($CHROMIUM, chromium, chromium-browser, google-chrome);
# otherwise installs Debian's `chromium` package, which needs root and apt-get. Exit status 0 and the
# path on stdout when a browser is available; non-zero and the reason on stderr when it is not.
# Nothing else is installed (the test drives Chromium over its DevTools pipe: no chromedriver needed).
set -uo pipefail

find_browser() {
  local candidate
  for candidate in "${CHROMIUM:-}" /usr/bin/chromium chromium chromium-browser google-chrome; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

if find_browser; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "no Chromium found and not root: install Debian's 'chromium' package (sudo apt-get install chromium)" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no Chromium found and no apt-get on this system: install a Chromium and set CHROMIUM=/path/to/it" >&2
  exit 3
fi
echo "installing Debian's chromium package (once)..." >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >&2; then
  echo "apt-get update failed (no network access to the Debian mirrors?)" >&2
  exit 4
fi
if ! apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2; then
  echo "apt-get install chromium failed" >&2
  exit 5
fi
find_browser || { echo "chromium was installed but is not on PATH" >&2; exit 6; }
