#!/usr/bin/env bash
# Fetches the Node.js release acinstall ships on, for each arch, as runtime/package-lock.json pins it
# (integrity-checked by npm). Each arch gets a folder of its own: npm installs another platform's
# package only as an optional dependency with --cpu, and `npm ci` empties node_modules each time.
set -euo pipefail
cd "$(dirname "$0")/../runtime"
for cpu in x64 arm64; do
  dir=".nodes/$cpu"
  want=$(node -p "require('./package-lock.json').packages['node_modules/node-linux-$cpu'].integrity")
  # Written only once npm ci has finished: a run cut mid-way leaves a package.json beside half a binary.
  [ "$(cat "$dir/.fetched" 2>/dev/null)" = "$want" ] && continue
  rm -rf "$dir"
  mkdir -p "$dir"
  cp package.json package-lock.json "$dir/"
  (cd "$dir" && npm ci --cpu="$cpu" --os=linux --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$want" > "$dir/.fetched"
done
