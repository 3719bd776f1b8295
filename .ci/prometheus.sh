#!/usr/bin/env bash
# Install Debian's `prometheus` package for tests/e2e/test_dashboards_prometheus.py.
#
# Idempotent: does nothing when the binary is already there.  The package's system service is
# never left running (it would hold port 9090): starting is denied through policy-rc.d during the
# install, and if a service started anyway it is stopped.  The tests start their own Prometheus on
# an ephemeral port with a generated configuration.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "prometheus.sh: must run as root to apt-get install prometheus" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY"
    chmod 0755 "$POLICY"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then rm -f "$POLICY"; fi
}
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# Belt and braces: stop the packaged daemon if something started it.
if [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi

command -v prometheus >/dev/null 2>&1
prometheus --version 2>&1 | head -n 1
