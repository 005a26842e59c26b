#!/bin/sh
# Writes the Secret `qexec-pki` (namespace qexec) that qexecd-daemonset.yaml mounts at
# /etc/qexec: the CA certificate, one server certificate and key per node, and the
# certificate of a `viewer` identity the liveness probe uses.
#
#   kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' \
#     | deploy/kubernetes/make-pki-secret.sh ./pki > qexec-pki-secret.yaml
#   kubectl apply -f qexec-pki-secret.yaml
#
# stdin: one node per line, `NODE_NAME [NAME_OR_IP…]`; every word becomes a SAN of that
# node's certificate (localhost, 127.0.0.1 and ::1 are always in it: the probe dials
# 127.0.0.1). PKI_DIR holds the CA (`qexec certs init --dir PKI_DIR` makes one when it
# has none; keep ca-key.pem off the nodes). `qexec certs issue-server` rewrites
# PKI_DIR/server.pem for each node in turn; the per-node copies go into the Secret as
# NODE_NAME.pem and NODE_NAME-key.pem. Every node can read every node's key this way
# (one Secret, mounted everywhere): if that is too much, make one Secret per node
# instead (not covered here). A Secret holds at most 1 MiB: about 500 nodes.
#
# Needs: qexec on PATH (or QEXEC=/path/to/qexec), base64 (GNU coreutils).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 PKI_DIR < nodes.txt > qexec-pki-secret.yaml" >&2
    exit 2
fi
pki=$1
qexec=${QEXEC:-qexec}

if [ ! -f "$pki/ca-key.pem" ]; then
    "$qexec" certs init --dir "$pki" >&2
fi
if [ ! -f "$pki/users/probe.pem" ]; then
    "$qexec" certs issue probe --role viewer --dir "$pki" >&2
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cp "$pki/ca.pem" "$out/ca.pem"
cp "$pki/users/probe.pem" "$out/probe.pem"
cp "$pki/users/probe-key.pem" "$out/probe-key.pem"

nodes=0
while read -r node names || [ -n "${node:-}" ]; do
    [ -n "${node:-}" ] || continue
    case $node in
        *[!A-Za-z0-9.-]*) echo "$0: not a node name: $node" >&2; exit 1 ;;
    esac
    set -- --san "$node"
    for name in $names; do
        set -- "$@" --san "$name"
    done
    "$qexec" certs issue-server --dir "$pki" "$@" >&2
    cp "$pki/server.pem" "$out/$node.pem"
    cp "$pki/server-key.pem" "$out/$node-key.pem"
    nodes=$((nodes + 1))
done
if [ "$nodes" -eq 0 ]; then
    echo "$0: no node names on stdin" >&2
    exit 1
fi

printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: qexec-pki\n  namespace: qexec\ntype: Opaque\ndata:\n'
for f in "$out"/*; do
    printf '  %s: %s\n' "$(basename "$f")" "$(base64 -w0 "$f")"
done
echo "$0: $nodes node certificates" >&2
