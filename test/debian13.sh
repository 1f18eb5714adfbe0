#!/usr/bin/env bash
# The README's test command on Debian 13 (trixie: GCC 14, oneDNN 3.7, OpenBLAS 0.3.29),
# in a chroot that debootstrap makes from Debian's registry, with warnings as errors and
# without the sanitizer passes (tools/test.sh runs those on the host). Debian 12, the CI
# host, has GCC 12 and oneDNN 2: GCC 14 warns where 12 does not, and oneDNN 3.7 computes
# differently (bench/NOTES.md, "oneDNN 3"). .ci/run calls it; it needs root, debootstrap
# (installed if missing), mount and chroot, and says why it skips where it cannot have them.
# What is tested is HEAD, cloned into the chroot. Environment: DEBIAN13_ROOT (default
# /tmp/exitrt-debian13; kept, so a second run skips debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
root=${DEBIAN13_ROOT:-/tmp/exitrt-debian13}
skip() { echo "== Debian 13 pass skipped: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "not root (debootstrap, mount and chroot need it)"
if ! command -v debootstrap > /dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap > /dev/null ||
    skip "debootstrap could not be installed"
fi
if [ ! -x "$root/usr/bin/apt-get" ]; then
  rm -rf "$root"
  debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian > "$root.debootstrap.log" 2>&1 ||
    skip "debootstrap failed ($root.debootstrap.log)"
fi
mounted=()
cleanup() { for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" 2> /dev/null || true; done; }
trap cleanup EXIT
for d in proc sys dev dev/pts; do
  mountpoint -q "$root/$d" && continue
  mount --bind "/$d" "$root/$d" 2> /dev/null || skip "mount --bind /$d into the chroot was refused"
  mounted+=("$root/$d")
done
chroot "$root" true 2> /dev/null || skip "chroot was refused"
cp /etc/resolv.conf "$root/etc/resolv.conf"
rm -rf "$root/root/exitrt"
git clone -q "$PWD" "$root/root/exitrt"
echo "== Debian 13 (trixie) chroot: tools/test.sh at $(git -C "$root/root/exitrt" log -1 --format=%h)"
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  bash -c "cd /root/exitrt && ERT_WERROR=ON ERT_SANITIZE=0 bash tools/test.sh && build/exitrt --version"
