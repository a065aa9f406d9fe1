#!/bin/sh
# seqshm: DKMS's POST_BUILD step (dkms.conf): keeps this build's Module.symvers in $1, the
# per-kernel folder DKMS keeps the built module in, for out-of-tree producers to link against.
set -e
[ -d "$1" ] || { echo "dkms-post-build.sh: $1 is not a folder" >&2; exit 1; }
cp Module.symvers "$1/Module.symvers"
