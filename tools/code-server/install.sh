#!/usr/bin/env bash
# Installs what lmscope's integration tests (tests/integration) need: Debian's Chromium, and
# code-server 4.100.3 (a real VS Code 1.100.3 for Node 20) + playwright-core from this folder's
# package-lock.json. Idempotent: a second run only checks a stamp and returns.
# Why each step: see shared/vscode-testing.md ("A plain install as root fails four times").
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

stamp="node_modules/.lmscope-installed"
apt_packages=(libkrb5-dev ripgrep chromium)

lock_sum() { sha256sum package-lock.json | cut -d' ' -f1; }

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 && -f "$stamp" && "$(cat "$stamp")" == "$(lock_sum)" ]]; then
  exit 0
fi

if [[ ${#missing[@]} -gt 0 ]]; then
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "install.sh: apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# @vscode/ripgrep (inside code-server's bundled VS Code) downloads rg from GitHub unless this
# tarball is already in its cache: give it Debian's rg.
rg_cache="$(node -p 'require("os").tmpdir()')/vscode-ripgrep-cache-1.15.11"
rg_tar="$rg_cache/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"
if [[ ! -s "$rg_tar" ]]; then
  mkdir -p "$rg_cache"
  tar czf "$rg_tar.tmp" -C /usr/bin rg
  mv "$rg_tar.tmp" "$rg_tar"
fi

echo "install.sh: npm ci in tools/code-server (code-server 4.100.3, playwright-core; ~1 min)"
rm -f "$stamp"
# unsafe_perm: code-server's postinstall refuses root without it; yes: node-pty's postinstall
# runs `npx node-gyp`, which would otherwise wait for a prompt. "prebuild-install ... ENOTFOUND
# github.com" lines are harmless (native modules compile from source).
npm_config_unsafe_perm=true npm_config_yes=true \
  npm ci --no-audit --no-fund --loglevel=error
test -x node_modules/.bin/code-server
lock_sum >"$stamp"
echo "install.sh: done"
