#!/usr/bin/env bash
# Builds the kube-apiserver that the Kubernetes tests run against, from the
# Go module proxy alone, and prints its path. The build takes ~6 minutes of
# 2 CPUs with empty caches (seconds with Go's build cache warm); the binary
# is kept in ${XDG_CACHE_HOME:-~/.cache}/vxrouter under the release and a
# hash of this module, so a machine builds each release once.
#
# This module is not the project's: go.mod requires k8s.io/kubernetes and
# replaces each of its ./staging modules with the tag of the same release
# (v1.Y.Z -> v0.Y.Z); -mod=mod lets go fill in the rest of the graph, which
# go.sum pins.
set -euo pipefail
cd "$(dirname "$0")"

version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' go.mod)
hash=$(cat go.mod go.sum build.sh | sha256sum | cut -c1-12)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vxrouter
out=$cache/kube-apiserver-$version-$hash
if [ ! -x "$out" ]; then
	mkdir -p "$cache"
	major=${version#v}
	major=${major%%.*}
	minor=${version#v*.}
	minor=${minor%%.*}
	# The version it reports (/version, its log) is the release's, not
	# v0.0.0-master.
	pkg=k8s.io/component-base/version
	ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	echo "building kube-apiserver $version into $out (minutes with a cold cache)" >&2
	GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -ldflags "$ldflags" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
	mv "$out.tmp" "$out"
fi
echo "$out"
