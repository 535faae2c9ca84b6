#!/usr/bin/env bash
# Puts the kernel for the tiny guest image (test/support/tiny-image.ts) where its builder looks
# first: Debian's cloud kernel package, as a .deb in .ci/cache/kernel/ (gitignored). The builder
# unpacks it with `dpkg-deb -x` and never downloads anything itself, so this runs before the
# tests: .ci/run calls it, a developer runs it once (`bash test/support/tiny-image-kernel.sh`).
#
# The builder's lookup order (see tiny-image.ts): an explicit kernelDeb option, then the newest
# .ci/cache/kernel/linux-image-*.deb, then the newest /boot/vmlinuz-<version> that has
# /lib/modules/<version>/modules.dep.
#
# The package is the one linux-image-cloud-amd64 depends on (linux-image-<abi>-cloud-amd64): the
# cloud flavour is a third of the generic one's size and boots faster under TCG; it has the
# virtio, IDE (ata_piix) and virtio-scsi drivers the guest needs, but no AHCI (SATA).
# Does nothing when a package is already there. Needs apt (Debian or Ubuntu); root only to run
# `apt-get update` when the package lists are missing or stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.ci/cache/kernel
meta=linux-image-cloud-amd64

if compgen -G "$dest/linux-image-*.deb" >/dev/null; then
  exit 0
fi
mkdir -p "$dest"

kernel_package() {
  apt-cache depends "$meta" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}

pkg=$(kernel_package)
# No package lists yet (a fresh machine), or lists naming a version the mirror no longer has.
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(kernel_package)
fi
[ -n "$pkg" ] || { echo "tiny-image-kernel: apt knows no $meta package" >&2; exit 1; }

tmp=$(mktemp -d "$dest/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt's download sandbox user cannot write here: let it (else apt warns and downloads as root).
chmod 777 "$tmp"
if ! (cd "$tmp" && apt-get download -qq "$pkg"); then
  apt-get update -qq
  pkg=$(kernel_package)
  (cd "$tmp" && apt-get download -qq "$pkg")
fi
# Renamed into place whole: the builder never sees a partial download.
for deb in "$tmp"/*.deb; do mv "$deb" "$dest/"; done
echo "tiny-image-kernel: $(ls "$dest"/linux-image-*.deb)"
