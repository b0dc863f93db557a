#!/bin/bash
# First boot of the ClickHouse host: the data volume on /var/lib/clickhouse,
# ClickHouse from its Debian repository, a `sentinel` user with the password
# whose SHA-256 Terraform was given (the password itself is in Secrets Manager).
set -euo pipefail
dev=/dev/nvme1n1
[ -b "$dev" ] || dev=/dev/xvdf
if ! blkid "$dev"; then mkfs.ext4 -L clickhouse "$dev"; fi
mkdir -p /var/lib/clickhouse
grep -q LABEL=clickhouse /etc/fstab || echo "LABEL=clickhouse /var/lib/clickhouse ext4 defaults,nofail 0 2" >> /etc/fstab
mount -a
apt-get update
apt-get install -y apt-transport-https ca-certificates curl gnupg
curl -fsSL https://packages.clickhouse.com/rpm/lts/repodata/repomd.xml.key | gpg --dearmor -o /usr/share/keyrings/clickhouse-keyring.gpg
echo "deb [signed-by=/usr/share/keyrings/clickhouse-keyring.gpg] https://packages.clickhouse.com/deb stable main" > /etc/apt/sources.list.d/clickhouse.list
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y clickhouse-server clickhouse-client
cat > /etc/clickhouse-server/config.d/listen.xml <<'XML'
<clickhouse><listen_host>0.0.0.0</listen_host></clickhouse>
XML
cat > /etc/clickhouse-server/users.d/sentinel.xml <<XML
<clickhouse><users><sentinel>
  <password_sha256_hex>${password_sha256}</password_sha256_hex>
  <networks><ip>::/0</ip></networks>
  <profile>default</profile><quota>default</quota>
  <access_management>0</access_management>
</sentinel></users></clickhouse>
XML
chown -R clickhouse:clickhouse /var/lib/clickhouse
systemctl enable --now clickhouse-server
