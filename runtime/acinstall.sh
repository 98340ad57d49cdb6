#!/bin/sh
# acinstall: runs the executable for this machine (acinstall-linux-amd64 or -arm64, beside this file
# on the medium), or says in one line why it cannot. The executables cannot say it themselves: the
# kernel refuses another arch's ELF, and the loader an old glibc, before a line of them runs.
set -u
self=$(readlink -f "$0" 2>/dev/null || echo "$0")
here=$(dirname "$self")
machine=$(uname -m)
case "$machine" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *)
    echo "acinstall: this machine is $machine; acinstall runs on amd64 (x86_64) and arm64 (aarch64) Linux" >&2
    exit 1
    ;;
esac
exe="$here/acinstall-linux-$arch"
if [ ! -f "$exe" ]; then
  carried=$(cd "$here" && ls -d acinstall-linux-* 2>/dev/null | tr '\n' ' ')
  echo "acinstall: this machine is $arch, and $here has no acinstall-linux-$arch (it has: ${carried:-none}); bundle with --arch $arch to get it" >&2
  exit 1
fi
# glibc 2.28 or later (RHEL 8, Ubuntu 20.04, Debian 10): what Node's official binaries need.
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null) || glibc=
case "$glibc" in
  "glibc "*) version=${glibc#glibc } ;;
  *)
    echo "acinstall: needs glibc 2.28 or later, and this machine's C library is not glibc (${glibc:-getconf GNU_LIBC_VERSION says nothing}; musl, as on Alpine?)" >&2
    exit 1
    ;;
esac
major=${version%%.*}
minor=${version#*.}
minor=${minor%%.*}
if [ "$major" -lt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -lt 28 ]; }; then
  echo "acinstall: needs glibc 2.28 or later (RHEL 8, Ubuntu 20.04, Debian 10 and later); this machine has glibc $version" >&2
  exit 1
fi
exec "$exe" "$@"
