#!/usr/bin/env bash
# The Debian package under a real systemd: builds the .deb (packaging/build-deb.sh, or takes
# DEB=path), debootstraps Debian 12 with systemd and Mosquitto from Debian's mirror (cached
# in target/deb-test/bookworm-base; delete it to start over), boots a fresh copy with
# `systemd-nspawn --register=no --keep-unit -b` on a private network (its own loopback, so
# its 1883 and 8080 touch nothing on this machine), and runs packaging/deb-checks.sh inside
# as a oneshot unit that powers the container off; the broker-over-TLS checks use a test CA
# made here with openssl. Needs root, debootstrap and
# systemd-container. Exit 0 only when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "test-deb.sh needs root (debootstrap, systemd-nspawn)" >&2; exit 1; }
for tool in debootstrap systemd-nspawn; do
  command -v "$tool" >/dev/null 2>&1 ||
    { echo "$tool is missing: apt-get install debootstrap systemd-container" >&2; exit 1; }
done

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
work="$target_dir/deb-test"
base="$work/bookworm-base"
run="$work/run"
mkdir -p "$work"

deb=${DEB:-$(packaging/build-deb.sh)}
[ -f "$deb" ] || { echo "no package at '$deb'" >&2; exit 1; }

# Debian 12 from the mirror this machine's apt uses (deb.debian.org by default).
mirror=${DEBIAN_MIRROR:-$(grep -rhoE '^URIs: *http[^ ]*/debian/?$|^deb +http[^ ]*/debian/? ' \
  /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -n 1 | grep -oE 'http[^ ]*' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
include=systemd,systemd-sysv,dbus,mosquitto,mosquitto-clients,curl,ca-certificates,procps
stamp="bookworm minbase $include"
if [ "$(cat "$base/.scriptd-debootstrap" 2>/dev/null)" != "$stamp" ]; then
  echo "debootstrap Debian 12 from $mirror into $base (once; about 3 minutes)" >&2
  rm -rf "$base" "$base.tmp"
  started=$(date +%s)
  debootstrap --variant=minbase --include="$include" bookworm "$base.tmp" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  echo "$stamp" >"$base.tmp/.scriptd-debootstrap"
  mv "$base.tmp" "$base"
  echo "debootstrap took $(($(date +%s) - started)) s" >&2
fi

# A fresh copy per run: the cached tree never sees the package.
rm -rf "$run"
cp -a "$base" "$run"
cp "$deb" "$run/root/"
install -m 0755 packaging/deb-checks.sh "$run/usr/local/sbin/scriptd-deb-checks"
# A test CA, a broker certificate for localhost/127.0.0.1 and a client certificate for the
# checks of the broker over mutual TLS (made here: the container has no openssl).
command -v openssl >/dev/null 2>&1 || { echo "openssl is missing: apt-get install openssl" >&2; exit 1; }
tls="$run/root/tls"
mkdir -p "$tls"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj /CN=scriptd-deb-test-CA -keyout "$tls/ca.key" -out "$tls/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
for leaf in "server serverAuth DNS:localhost,IP:127.0.0.1" "client clientAuth DNS:scriptd"; do
  read -r name usage san <<<"$leaf"
  openssl req "${ec[@]}" -subj "/CN=scriptd-deb-$name" -keyout "$tls/$name.key" -out "$tls/$name.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$san" "$usage" >"$tls/$name.ext"
  openssl x509 -req -in "$tls/$name.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 2 \
    -extfile "$tls/$name.ext" -out "$tls/$name.pem" 2>/dev/null
done
cat >"$run/etc/systemd/system/scriptd-deb-checks.service" <<'EOF'
[Unit]
Description=scriptd package checks
After=multi-user.target mosquitto.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/scriptd-deb-checks
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=15min
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/scriptd-deb-checks.service \
  "$run/etc/systemd/system/multi-user.target.wants/scriptd-deb-checks.service"
echo scriptd-deb-test >"$run/etc/hostname"

echo "booting Debian 12 with systemd-nspawn; console in $work/console.log" >&2
started=$(date +%s)
rc=0
timeout 20m systemd-nspawn --quiet --register=no --keep-unit --private-network \
  --machine=scriptd-deb-test --directory="$run" --boot >"$work/console.log" 2>&1 </dev/null || rc=$?
echo "container ran $(($(date +%s) - started)) s (systemd-nspawn exit $rc)" >&2

cat "$run/root/deb-checks.log" 2>/dev/null || true
result=$(cat "$run/root/deb-checks.result" 2>/dev/null || echo missing)
passed=$(grep -c '^PASS' "$run/root/deb-checks.log" 2>/dev/null || true)
failed=$(grep -c '^FAIL' "$run/root/deb-checks.log" 2>/dev/null || true)
echo "deb-checks: ${passed:-0} passed, ${failed:-0} failed"
if [ "$result" != 0 ]; then
  echo "package checks: $result failed or did not finish (console: $work/console.log)" >&2
  exit 1
fi
