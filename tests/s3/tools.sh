#!/usr/bin/env bash
# Cairn's S3 gateway against the aws cli, rclone, s3cmd and restic, as
# their users run them. Run by tests/tests/s3.rs with:
#   ENDPOINT ACCESS_KEY SECRET WORKDIR
# Each tool: mb, a 20 MiB (multipart) upload, list, download + sha256, a
# ranged read where the tool has one, copy, delete, rb.
set -euo pipefail
# A step that fails quietly (grep, [[ ]]) still says which it was.
trap 'echo "tools.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
endpoint=$1 key=$2 secret=$3 work=$4
export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
# rclone 1.60 fails on any AWS_CA_BUNDLE ("transport unsupported type");
# the gateway here is plain HTTP on loopback.
unset AWS_CA_BUNDLE
hostport=${endpoint#http://}
mkdir -p "$work"
cd "$work"
head -c $((20 << 20)) /dev/urandom > big
sum=$(sha256sum < big)
same() { [[ $(sha256sum < "$1") == "$sum" ]] || { echo "$2: downloaded bytes differ" >&2; exit 1; }; }

echo "tools: aws cli"
aws="aws --endpoint-url $endpoint"
q="--only-show-errors"
$aws s3 mb s3://awscli >/dev/null
$aws s3 cp $q big s3://awscli/dir/big
# grep reads all its input: with pipefail, `grep -q` that stops at the
# first match makes a tool still writing die of SIGPIPE, and the step fail.
has() { grep "$@" >/dev/null; }
$aws s3 ls s3://awscli/dir/ | has " $((20 << 20)) big"
$aws s3 cp $q s3://awscli/dir/big big.aws
same big.aws "aws s3 cp"
$aws s3api get-object --bucket awscli --key dir/big --range bytes=100-199 part >/dev/null
cmp part <(tail -c +101 big | head -c 100)
$aws s3 cp $q s3://awscli/dir/big s3://awscli/copy
$aws s3 sync $q . s3://awscli/synced --exclude "*" --include "part"
[[ $($aws s3 ls s3://awscli --recursive | wc -l) -eq 3 ]]
$aws s3 rm $q --recursive s3://awscli
$aws s3 rb s3://awscli >/dev/null

echo "tools: rclone"
rc=(rclone --config /dev/null --s3-provider Other --s3-endpoint "$endpoint" --s3-access-key-id "$key"
    --s3-secret-access-key "$secret" --s3-region us-east-1 --s3-chunk-size 8M --s3-upload-cutoff 8M)
"${rc[@]}" mkdir :s3:rclone
"${rc[@]}" copyto big :s3:rclone/dir/big
"${rc[@]}" lsf -R :s3:rclone | has -x "dir/big"
"${rc[@]}" copyto :s3:rclone/dir/big big.rclone
same big.rclone "rclone copyto"
"${rc[@]}" cat --offset 100 --count 100 :s3:rclone/dir/big > part.rclone
cmp part part.rclone
"${rc[@]}" copyto :s3:rclone/dir/big :s3:rclone/copy
mkdir -p only && cp big only/big && "${rc[@]}" check only :s3:rclone/dir/ --one-way
"${rc[@]}" purge :s3:rclone

echo "tools: s3cmd"
s3c=(s3cmd --config /dev/null --access_key "$key" --secret_key "$secret" --host "$hostport"
     --host-bucket "$hostport" --no-ssl --region us-east-1 --multipart-chunk-size-mb 8 --no-progress)
"${s3c[@]}" mb s3://s3cmd >/dev/null
"${s3c[@]}" put big s3://s3cmd/dir/big >/dev/null
"${s3c[@]}" ls s3://s3cmd/dir/ | has "s3://s3cmd/dir/big"
"${s3c[@]}" get s3://s3cmd/dir/big big.s3cmd >/dev/null
same big.s3cmd "s3cmd get"
"${s3c[@]}" cp s3://s3cmd/dir/big s3://s3cmd/copy >/dev/null
"${s3c[@]}" del s3://s3cmd/dir/big s3://s3cmd/copy >/dev/null
"${s3c[@]}" rb s3://s3cmd >/dev/null

echo "tools: restic"
mkdir -p tree/sub
for i in $(seq 1 30); do head -c $((i * 5000)) /dev/urandom > "tree/sub/f$i"; done
cp big tree/big
ln -s sub/f1 tree/link
export RESTIC_PASSWORD=cairn-test RESTIC_REPOSITORY="s3:$endpoint/restic"
$aws s3 mb s3://restic >/dev/null
restic init --quiet
restic backup --quiet tree
restic check --quiet
restic restore --quiet latest --target restored
diff -r tree restored/tree
echo "tools: all passed"
