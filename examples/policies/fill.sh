#!/bin/sh
# fill.sh TEMPLATE KEYDIR [NODEDATA] > POLICY.json
#
# Turns an example policy template into a policy for your own keys:
#   "@NAME.signing_key", "@NAME.sealing_key"  the public halves of KEYDIR/NAME.key
#                                             (create it with: cloister key new --out KEYDIR/NAME.key)
#   "@node.signing_key"                       the platform key of the node whose data directory
#                                             is NODEDATA (that of 'cloister up' will do) — never a
#                                             key that happens to lie in KEYDIR
#   "@sha256:PATH"                            the SHA-256 of PATH, relative to the repository root
# Set CLOISTER to the cloister binary if it is not on PATH (e.g. CLOISTER=./cloister).
# 'cloister policy new' makes such policies from flags, without a template.
set -eu
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	echo "usage: $0 TEMPLATE KEYDIR [NODEDATA] > POLICY.json" >&2
	exit 2
fi
tmpl=$1
keydir=$2
nodedata=${3:-}
cloister=${CLOISTER:-cloister}
root=$(cd "$(dirname "$0")/../.." && pwd)

if ! command -v "$cloister" >/dev/null 2>&1; then
	echo "$0: cannot run \"$cloister\": build it (go build -o cloister ./cmd/cloister) and give it as CLOISTER=./cloister, or put it on PATH" >&2
	exit 2
fi

out=$(cat "$tmpl")
for ph in $(grep -o '"@[A-Za-z0-9_-]*\.\(signing\|sealing\)_key"' "$tmpl" | sort -u | tr -d '"'); do
	name=${ph#@}
	name=${name%.*}
	field=${ph#*.}
	if [ "$name" = node ]; then
		if [ -z "$nodedata" ]; then
			echo "$0: $tmpl names the node's platform key: give the node's data directory (or that of 'cloister up') as the third argument" >&2
			exit 2
		fi
		keyfile=$nodedata/platform.key
		[ -f "$nodedata/up.json" ] && keyfile=$nodedata/node/platform.key
		json=$("$cloister" key public "$keyfile" --json) || {
			echo "$0: cannot read the node's platform key $keyfile: is $nodedata a node's data directory? A node makes it on its first start" >&2
			exit 1
		}
	else
		json=$("$cloister" key public "$keydir/$name.key" --json) || {
			echo "$0: cannot read the key of \"$name\" (above); create it with: $cloister key new --out $keydir/$name.key" >&2
			exit 1
		}
	fi
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
