#!/usr/bin/env bash
# Installs what acpack and its tests need on Debian (as root), then the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
# qemu-user-static and the arm64 cross libraries (loader, libc, libstdc++, libgcc_s under
# /usr/aarch64-linux-gnu): the arm64 executable runs under `qemu-aarch64-static -L` in
# test/integration/site-executable.test.ts (called by name: no binfmt_misc here). binutils: objdump
# and readelf, which check what the executables need from glibc. crossbuild-essential-arm64: gcc for
# arm64, which compiles the registry's mmap addon that the arm64 executable carries (build-site.ts).
# iptables: p2p-lab.test.ts puts a byte-flipping proxy in front of a test host's agent (a nat
# REDIRECT inside that host's own network namespace).
# openssl: trust.test.ts checks that openssl reads acpack's keys and prints the same key id.
for pkg in docker-registry skopeo zstd containerd podman openssh-server openssh-client iproute2 iptables wrk curl python3 openssl \
  qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross binutils crossbuild-essential-arm64; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
npm ci --no-audit --no-fund
# The Node release acinstall ships on, per arch (pinned in runtime/), then acpack and acinstall's executables.
bash scripts/fetch-runtime.sh
npm run build
