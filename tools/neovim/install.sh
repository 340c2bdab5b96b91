#!/usr/bin/env bash
# Installs what tests/test_neovim_client.py needs: Debian's Neovim (bookworm: 0.7.2), the
# third-party LSP client the daemon is tested under besides VS Code. Idempotent: apt runs only
# when the package is missing; a second run only asks dpkg and returns.
set -euo pipefail

pkg=neovim
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
  exit 0
fi

sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
echo "install.sh: apt-get install $pkg"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
command -v nvim >/dev/null
echo "install.sh: $(nvim --version | head -1)"
