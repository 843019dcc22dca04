#!/bin/sh
# build.sh: build examples/cpp/build/capraft-example from main.c++ and the
# repository's schema/*.capnp (the C++ is generated here, never committed).
#
# Needs capnp, g++ and pkg-config with Cap'n Proto's C++ library
# (Debian/Ubuntu: apt-get install capnproto libcapnp-dev pkg-config g++),
# and Go, to find go-capnp's std/go.capnp, which every schema imports
# (set GOCAPNP_STD to that directory to skip Go). CXX and CXXFLAGS are
# honoured. Run from anywhere.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out="$here/build"

for tool in capnp "${CXX:-g++}" pkg-config; do
	command -v "$tool" >/dev/null 2>&1 || {
		echo "build.sh: $tool not found (Debian/Ubuntu: apt-get install capnproto libcapnp-dev pkg-config g++)" >&2
		exit 1
	}
done
pkg-config --exists capnp-rpc || {
	echo "build.sh: pkg-config does not know capnp-rpc (Debian/Ubuntu: apt-get install libcapnp-dev)" >&2
	exit 1
}

if [ -z "${GOCAPNP_STD:-}" ]; then
	gocapnp=$(cd "$root" && go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)
	if [ -z "$gocapnp" ]; then # not in the module cache yet
		(cd "$root" && go mod download capnproto.org/go/capnp/v3)
		gocapnp=$(cd "$root" && go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)
	fi
	GOCAPNP_STD="$gocapnp/std"
fi

rm -rf "$out" # nothing stale: a schema file removed leaves no object behind
mkdir -p "$out/gen"
capnp compile -I"$GOCAPNP_STD" -oc++:"$out/gen" --src-prefix="$root/schema" "$root"/schema/*.capnp

# One compiler per source, two at a time: the generated files are large.
flags="-std=c++17 ${CXXFLAGS:--O1} -I$out/gen $(pkg-config --cflags capnp-rpc)"
pids=""
for src in "$here/main.c++" "$out"/gen/*.capnp.c++; do
	obj="$out/$(basename "$src" .c++).o"
	# shellcheck disable=SC2086 # flags is a word list
	${CXX:-g++} $flags -c "$src" -o "$obj" &
	pids="$pids $!"
	if [ "$(echo $pids | wc -w)" -ge 2 ]; then
		for p in $pids; do wait "$p"; done
		pids=""
	fi
done
for p in $pids; do wait "$p"; done
# shellcheck disable=SC2046 # pkg-config prints a word list
${CXX:-g++} "$out"/*.o -o "$out/capraft-example" $(pkg-config --libs capnp-rpc)
echo "built $out/capraft-example"
