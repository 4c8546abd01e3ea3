#!/usr/bin/env bash
# Downloads DataFusion's own sqllogictest files (the `datafusion-sqllogictest`
# crate's `test_files/` and `data/`, from crates.io, checksum-pinned) for the
# replay test. The crate is not linked: only its files are used.
#
# Usage: tests/datafusion-slt/fetch.sh [DIR]
#   DIR defaults to $KILN_DATAFUSION_SLT or ~/.cache/kiln/datafusion-sqllogictest-55.2.0
set -euo pipefail

VERSION=55.2.0
SHA256=b270cea4d8c2b2c42773e60164204386fb97d7936736e5f126ac751b86d7dabe
DIR="${1:-${KILN_DATAFUSION_SLT:-$HOME/.cache/kiln/datafusion-sqllogictest-$VERSION}}"

if [ -f "$DIR/.complete" ]; then
  echo "== DataFusion sqllogictest files already in $DIR"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
url="https://static.crates.io/crates/datafusion-sqllogictest/datafusion-sqllogictest-$VERSION.crate"
if command -v curl >/dev/null 2>&1; then
  curl --fail --silent --show-error --location --retry 3 -o "$tmp/crate.tar.gz" "$url"
else
  python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$url" "$tmp/crate.tar.gz"
fi
echo "$SHA256  $tmp/crate.tar.gz" | sha256sum --check --quiet
tar xzf "$tmp/crate.tar.gz" -C "$tmp"
rm -rf "$DIR"
mkdir -p "$(dirname "$DIR")"
mv "$tmp/datafusion-sqllogictest-$VERSION" "$DIR"
touch "$DIR/.complete"
echo "== DataFusion sqllogictest files in $DIR"
