#!/usr/bin/env bash
# Build the book: book/src/*.md -> book/build/ (HTML), with mdBook.
#
# usage: scripts/book.sh
#
# Installs mdBook first if no 0.4 release of it is on PATH: version
# MDBOOK_VERSION, without the `serve` and `watch` features (a build needs
# neither, and they double the compile time), into target/tools so that a
# user's own mdbook is left alone. Running it again reuses that install.
#
# The book's Rust examples are not tested here: they run as doctests of the
# umbrella crate (`cargo test -p addrspace --doc`, via book/doctests.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=${MDBOOK_VERSION:-0.4.52}
tools=$PWD/target/tools

mdbook=''
if command -v mdbook >/dev/null 2>&1 && mdbook --version | grep -q '^mdbook v0\.4\.'; then
    mdbook=$(command -v mdbook)
elif [ -x "$tools/bin/mdbook" ] && "$tools/bin/mdbook" --version | grep -qF "v$MDBOOK_VERSION"; then
    mdbook=$tools/bin/mdbook
else
    printf 'book.sh: installing mdbook %s into %s\n' "$MDBOOK_VERSION" "$tools" >&2
    cargo install mdbook --locked --version "$MDBOOK_VERSION" \
        --no-default-features --features search --root "$tools"
    mdbook=$tools/bin/mdbook
fi

printf 'book.sh: %s\n' "$("$mdbook" --version)" >&2
"$mdbook" build book
printf 'book.sh: open book/build/index.html\n' >&2
