#!/usr/bin/env bash
# Fetches the Node.js release acinstall ships on, for each arch, as runtime/package-lock.json pins it
# (integrity-checked by npm). Each arch gets a folder of its own: npm installs another platform's
# package only as an optional dependency with --cpu, and `npm ci` empties node_modules each time.
set -euo pipefail
cd "$(dirname "$0")/../runtime"
for cpu in x64 arm64; do
  dir=".nodes/$cpu"
  want=$(node -p "require('./package-lock.json').packages['node_modules/node-linux-$cpu'].version")
  have=$(node -p "try { require('./$dir/node_modules/node-linux-$cpu/package.json').version } catch { '' }")
  [ "$have" = "$want" ] && continue
  mkdir -p "$dir"
  cp package.json package-lock.json "$dir/"
  (cd "$dir" && npm ci --cpu="$cpu" --os=linux --ignore-scripts --no-audit --no-fund --loglevel=error)
done
