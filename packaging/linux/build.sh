#!/usr/bin/env bash
# Linux bundles from PyInstaller's one-folder build (dist/tweety-studio): a .tar.gz to unpack anywhere (install.sh
# adds the menu entry for the current user) and a .deb that installs into /opt/tweety-studio with a menu entry and
# `tweety-studio` / `tweety` on the PATH. Usage: packaging/linux/build.sh DIST_DIR OUT_DIR VERSION
set -euo pipefail
dist=$1 out=$2 version=$3
here=$(cd "$(dirname "$0")" && pwd)
icons=$here/../../resources/icons
app=$dist/tweety-studio
test -x "$app/tweety-studio" || { echo "no PyInstaller build in $app (run: make package)" >&2; exit 1; }
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# .tar.gz: the folder, the desktop entry and icon, and a per-user installer of the menu entry.
name=tweety-studio-$version-linux-x86_64
cp -a "$app" "$stage/$name"
cp "$icons/tweety-studio.png" "$stage/$name/tweety-studio.png"
sed "s|/opt/tweety-studio|@DIR@|" "$here/tweety-studio.desktop" > "$stage/$name/tweety-studio.desktop"
cat > "$stage/$name/install.sh" <<'SH'
#!/bin/sh
# Adds Tweety Studio to your applications menu (no root needed); run it from the unpacked folder.
dir=$(cd "$(dirname "$0")" && pwd)
mkdir -p ~/.local/share/applications ~/.local/share/icons/hicolor/256x256/apps
sed "s|@DIR@|$dir|" "$dir/tweety-studio.desktop" > ~/.local/share/applications/tweety-studio.desktop
cp "$dir/tweety-studio.png" ~/.local/share/icons/hicolor/256x256/apps/
echo "Tweety Studio added to your applications menu."
SH
chmod +x "$stage/$name/install.sh"
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"

# .deb: /opt/tweety-studio, links in /usr/bin, menu entry and icon.
root=$stage/deb
mkdir -p "$root/DEBIAN" "$root/opt" "$root/usr/bin" "$root/usr/share/applications" \
         "$root/usr/share/icons/hicolor/256x256/apps"
cp -a "$app" "$root/opt/tweety-studio"
ln -s /opt/tweety-studio/tweety-studio "$root/usr/bin/tweety-studio"
ln -s /opt/tweety-studio/tweety "$root/usr/bin/tweety"
cp "$here/tweety-studio.desktop" "$root/usr/share/applications/"
cp "$icons/tweety-studio.png" "$root/usr/share/icons/hicolor/256x256/apps/"
cat > "$root/DEBIAN/control" <<CONTROL
Package: tweety-studio
Version: $version
Section: science
Priority: optional
Architecture: amd64
Maintainer: Tweety Studio <tweety-studio@users.noreply.github.com>
Installed-Size: $(du -sk "$root" | cut -f1)
Depends: libc6, libgl1, libegl1, libxkbcommon0, libfontconfig1, libdbus-1-3
Description: Adapt a language model to a new language, then chat and translate offline
 Tweety Studio gives a language model a new tokenizer trained on target-language text and initialises the new
 embeddings by trans-tokenization, fine-tunes them, exports GGUF and runs it locally with llama.cpp.
CONTROL
# gzip: xz would shrink the package a little more but takes minutes on a 1 GB tree.
dpkg-deb --root-owner-group -Zgzip --build "$root" "$out/tweety-studio_${version}_amd64.deb" >/dev/null
du -sh "$app" "$out"/*
