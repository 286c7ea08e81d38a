#!/usr/bin/env bash
# Install the Debian packages the dashboard tests drive: `prometheus` (scrapes a live Ray in
# tests/test_prometheus_dashboards.py) and `chromium` (renders the HTML report in tests/test_report.py).
# Usage: dashboards/install_system_tools.sh [prometheus] [chromium]   (default: both). Needs root.
set -euo pipefail
wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(prometheus chromium)
need=()
for tool in "${wanted[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "not root: cannot apt-get install ${need[*]}" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
