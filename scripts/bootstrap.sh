#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: the Debian packages the local runs need, then the
# virtual environment in .venv, then Azurite. The packages: PostgreSQL and MariaDB servers and
# clients (the targets of local rotations), unixODBC (pyodbc's driver manager, as in Azure's image),
# FreeTDS's ODBC driver (tdsodbc: the SQL Server connection tests, as no SQL Server runs here),
# Chromium (the approval page's tests drive it headless through Playwright, which is told its path:
# no browser is downloaded) and, when npm is not on PATH, Node.js and npm (Azurite, the local
# cloud's blob service, is a Node.js program).
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(postgresql mariadb-server mariadb-client unixodbc tdsodbc chromium)
missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Checked by command, not by package: a Node.js from elsewhere (NodeSource's nodejs bundles npm)
# must not be replaced by Debian's.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' own services (a system PostgreSQL, MariaDB) are not started: the tests and the
  # demo start throwaway servers of their own. Docker images carry this policy already.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  # A fresh machine may have no package lists yet; update only when the first try fails.
  $sudo apt-get install -y -q "${missing[@]}" </dev/null \
    || { $sudo apt-get update -q </dev/null && $sudo apt-get install -y -q "${missing[@]}" </dev/null; }
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
# The operators' command line (kvrotate/) as the console script .venv/bin/kvrotate; editable, so
# it always runs this work tree's code. pyproject.toml names kvrotate as the only package.
.venv/bin/python -m pip install -q --disable-pip-version-check -e .

# checkov (the Bicep security checks of tests/infra) pins older packaging and python-dateutil than
# .venv has, so it gets a venv of its own; reinstalled only when infra/requirements-checkov.txt changes.
checkov_venv=.venv/tools/checkov
if ! cmp -s infra/requirements-checkov.txt "$checkov_venv/requirements.installed"; then
  rm -rf "$checkov_venv"
  "$python" -m venv "$checkov_venv"
  "$checkov_venv/bin/python" -m pip install -q --disable-pip-version-check -r infra/requirements-checkov.txt
  cp infra/requirements-checkov.txt "$checkov_venv/requirements.installed"
fi

# Azurite (Microsoft's storage emulator) for the local cloud's blob endpoints, in a git-ignored
# directory of its own; local/cloud/azurite.py looks for exactly this version there. 3.35.0 is the
# newest whose engines.node accepts Node.js 20 (3.36 wants 21 or later). Reinstalled only when another
# version (or none) is there.
azurite_version=3.35.0
node_prefix=.venv/node
installed=$(node -p "require('./$node_prefix/node_modules/azurite/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$azurite_version" ]; then
  echo "installing Azurite $azurite_version into $node_prefix"
  npm install --prefix "$node_prefix" --no-audit --no-fund --save-exact --loglevel=error "azurite@$azurite_version"
fi
