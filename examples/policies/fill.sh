#!/bin/sh
# fill.sh TEMPLATE KEYDIR > POLICY.json
#
# Turns an example policy template into a policy for your own keys:
#   "@NAME.signing_key", "@NAME.sealing_key"  the public halves of KEYDIR/NAME.key
#                                             (create it with: cloister key new --out KEYDIR/NAME.key;
#                                             for "node", copy or link the node's DIR/platform.key)
#   "@sha256:PATH"                            the SHA-256 of PATH, relative to the repository root
# Set CLOISTER to the cloister binary if it is not on PATH.
set -eu
if [ $# -ne 2 ]; then
	echo "usage: $0 TEMPLATE KEYDIR > POLICY.json" >&2
	exit 2
fi
tmpl=$1
keydir=$2
cloister=${CLOISTER:-cloister}
root=$(cd "$(dirname "$0")/../.." && pwd)

out=$(cat "$tmpl")
for ph in $(grep -o '"@[A-Za-z0-9_-]*\.\(signing\|sealing\)_key"' "$tmpl" | sort -u | tr -d '"'); do
	name=${ph#@}
	name=${name%.*}
	field=${ph#*.}
	json=$("$cloister" key public "$keydir/$name.key" --json) || {
		echo "$0: cannot read the key of \"$name\": create it with: $cloister key new --out $keydir/$name.key" >&2
		exit 1
	}
	value=$(printf '%s\n' "$json" | sed -n "s/.*\"$field\": \"\([^\"]*\)\".*/\1/p")
	# Key strings are base64 (A-Z a-z 0-9 + / =) after a prefix: '|' is a safe delimiter.
	out=$(printf '%s\n' "$out" | sed "s|\"$ph\"|\"$value\"|g")
done
for ph in $(grep -o '"@sha256:[^"]*"' "$tmpl" | sort -u | tr -d '"'); do
	path=${ph#@sha256:}
	sum=$(sha256sum "$root/$path" | cut -d' ' -f1)
	out=$(printf '%s\n' "$out" | sed "s|\"$ph\"|\"$sum\"|g")
done
printf '%s\n' "$out"
