#!/bin/bash
# Runs inside the container booted by packaging/test-deb.sh (as the oneshot unit
# scriptd-deb-checks.service, after multi-user.target): installs the package the way an
# operator does and checks the unit under the container's real systemd. One line per check,
# "PASS ..." or "FAIL ...", in /root/deb-checks.log; the number of failures in
# /root/deb-checks.result; then powers the container off.
set -u
export LC_ALL=C.UTF-8 SYSTEMD_PAGER= PATH=/usr/sbin:/usr/bin:/sbin:/bin
log=/root/deb-checks.log
failures=0
: >"$log"
pass() { echo "PASS $*" | tee -a "$log"; }
fail() {
  echo "FAIL $*" | tee -a "$log"
  failures=$((failures + 1))
}
note() { echo "NOTE $*" | tee -a "$log"; }
check() { # check "description" command...
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then pass "$what"; else fail "$what"; fi
}
prop() { systemctl show -P "$1" scriptd; }
now() { date +%s.%N; }
elapsed() { echo "$(now) $1" | awk '{printf "%.2f", $1 - $2}'; }
# wait_for SECONDS command...: polls every 0.2 s.
wait_for() {
  local deadline=$(($(date +%s) + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.2
  done
}
finish() {
  echo "$failures" >/root/deb-checks.result
  systemctl poweroff --no-block
  exit 0
}
api="http://127.0.0.1:8080"
operator_config='[mqtt]
host = "127.0.0.1"'

# --- The package, installed the way docs/install.md says ------------------------------------
cd /root
deb=$(ls scriptd_*.deb)
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "./$deb" >/root/apt.log 2>&1; then
  fail "apt install ./$deb (see /root/apt.log)"
  cat /root/apt.log
  finish
fi
pass "apt install ./$deb"
check "postinst enabled the unit" test "$(systemctl is-enabled scriptd)" = enabled
check "postinst did not start it before the broker is set" test "$(prop ActiveState)" = inactive
check "the scriptd system user exists (sysusers.d)" id -u scriptd
check "default.toml and local.toml are conffiles" \
  sh -c "dpkg-query -W -f='\${Conffiles}' scriptd | grep -q /etc/scriptd/default.toml &&
         dpkg-query -W -f='\${Conffiles}' scriptd | grep -q /etc/scriptd/local.toml"
check "the embedded broker is off in the shipped defaults" \
  grep -qx 'embedded_broker = false' /etc/scriptd/default.toml
check "the docs are at the unit's Documentation= path" test -s /usr/share/doc/scriptd/operations.md
check "man page scriptd(1) and per-command pages" \
  test -s /usr/share/man/man1/scriptd.1.gz -a -s /usr/share/man/man1/scriptd-run.1.gz
check "shell completions (bash, zsh, fish)" test -s /usr/share/bash-completion/completions/scriptd \
  -a -s /usr/share/zsh/vendor-completions/_scriptd -a -s /usr/share/fish/vendor_completions.d/scriptd.fish
check "the unit runs /usr/bin/scriptd" test "$(prop ExecStart | grep -o 'path=[^ ]*')" = "path=/usr/bin/scriptd"

# The operator's two lines.
printf '%s\n' "$operator_config" >/etc/scriptd/local.toml
check "check-config accepts the operator's configuration" \
  runuser -u scriptd -- scriptd --config /etc/scriptd check-config
check "mosquitto is running in the container" wait_for 20 systemctl is-active mosquitto

# --- Start: active only after READY=1 ------------------------------------------------------
t0=$(now)
if systemctl start scriptd; then
  took=$(elapsed "$t0")
  code=$(curl -s -o /dev/null -w '%{http_code}' "$api/healthz")
  # With Type=notify, `systemctl start` returns once READY=1 came, and READY=1 is sent
  # after the HTTP API listens: the API must answer at once (any status).
  if [ "$(prop Type)" = notify ] && [ "$(prop ActiveState)" = active ] && [ "$code" != 000 ]; then
    pass "systemctl start returned after READY=1 in ${took}s: active, API answering ($code), status \"$(prop StatusText)\""
  else
    fail "start: Type=$(prop Type) state=$(prop ActiveState) first /healthz=$code"
  fi
else
  fail "systemctl start scriptd"
  journalctl -u scriptd --no-pager -n 30
fi
check "NotifyAccess=main and STATUS= reaches systemd" test -n "$(prop StatusText)"
if wait_for 20 sh -c "[ \$(curl -s -o /dev/null -w '%{http_code}' $api/healthz) = 200 ]"; then
  pass "/healthz 200 (broker connected)"
else
  fail "/healthz: $(curl -s "$api/healthz")"
fi
pid=$(prop MainPID)
note "main process $pid: $(grep -E '^(NoNewPrivs|Seccomp|CapBnd|CapEff)' "/proc/$pid/status" | tr '\t\n' '  ')"

# --- An occurrence published to Mosquitto reaches a subscriber as a push -------------------
user=$(runuser -u scriptd -- scriptd --config /etc/scriptd users add --login op@example.com --name Operator)
token=$(runuser -u scriptd -- scriptd --config /etc/scriptd tokens create --user "$user")
auth=(-H "Authorization: Bearer $token" -H 'X-Client: web')
created=$(curl -s -o /root/script.json -w '%{http_code}' "${auth[@]}" -H 'Content-Type: application/json' \
  -X POST "$api/api/v1/scripts" -d "{\"title\":\"deb\",\"event_id\":1,\"reaction_id\":2,\"status\":\"active\",
   \"cameras\":null,\"users\":[$user],\"extra\":{},
   \"timetable\":{\"days\":[{\"type\":\"same_every_day\",\"from\":\"00:00Z\",\"to\":\"23:59Z\",\"breaks\":[]}]}}")
check "POST /api/v1/scripts 201" test "$created" = 201
mosquitto_sub -h 127.0.0.1 -t 'vms/users/+/reactions' -v -C 1 -W 30 >/root/push.txt 2>&1 &
sub=$!
sleep 1
mosquitto_pub -h 127.0.0.1 -q 1 -t vms/analytics/events/5 \
  -m "{\"id\":\"deb-1\",\"event_id\":1,\"camera_id\":5,\"occurred_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"data\":{}}"
wait "$sub"
if grep -q "^vms/users/$user/reactions .*\"occurrence_id\":\"deb-1\"" /root/push.txt; then
  pass "occurrence deb-1 published to Mosquitto reached the subscriber as a push"
else
  fail "no push for deb-1: $(cat /root/push.txt)"
fi

# --- systemctl reload applies a live key ---------------------------------------------------
since=$(date +%s)
sleep 1
printf '%s\n\n[events]\nmax_age_seconds = 600\n' "$operator_config" >/etc/scriptd/local.toml
if systemctl reload scriptd &&
  wait_for 10 sh -c "journalctl -u scriptd --since @$since -o cat | grep 'configuration reloaded' | grep -q events.max_age_seconds"; then
  pass "systemctl reload applied events.max_age_seconds: $(journalctl -u scriptd --since "@$since" -o cat | grep 'configuration reloaded' | tail -n 1)"
else
  fail "reload: $(journalctl -u scriptd --since "@$since" -o cat | tail -n 5)"
fi
check "reload kept the process ($pid)" test "$(prop MainPID)" = "$pid"

# --- the descriptor limit the unit sets (LimitNOFILE=) ---------------------------------------
check "the unit sets LimitNOFILE=8192" test "$(prop LimitNOFILE)" = 8192
check "the daemon runs with 8192 open files" \
  sh -c "grep -E '^Max open files +8192 +8192' /proc/$pid/limits"
check "the daemon logged its descriptor budget" \
  sh -c "journalctl -u scriptd -o cat | grep -q 'file descriptor budget fits'"

# --- systemctl stop with a reaction stream open --------------------------------------------
curl -sN "${auth[@]}" "$api/api/v1/reactions/stream" >/root/stream.txt 2>&1 &
stream=$!
sleep 1
check "the reaction stream is open" kill -0 "$stream"
t0=$(now)
systemctl stop scriptd
took=$(elapsed "$t0")
if awk "BEGIN{exit !($took < 5)}"; then
  pass "systemctl stop with a reaction stream open took ${took}s (< 5 s)"
else
  fail "systemctl stop with a reaction stream open took ${took}s (limit 5 s)"
fi
check "the stream ended with the daemon" wait_for 5 sh -c "! kill -0 $stream"
check "stopped cleanly (inactive, exit status 0)" \
  test "$(prop ActiveState)" = inactive -a "$(prop ExecMainStatus)" = 0

# --- kill -STOP: the watchdog kills and restarts it ----------------------------------------
systemctl start scriptd
pid=$(prop MainPID)
restarts=$(prop NRestarts)
t0=$(now)
kill -STOP "$pid"
if wait_for 120 sh -c "[ \$(systemctl show -P NRestarts scriptd) -gt $restarts ] &&
                       [ \$(systemctl show -P ActiveState scriptd) = active ]"; then
  pass "SIGSTOPped process $pid killed by the watchdog and restarted as $(prop MainPID) after $(elapsed "$t0")s (WatchdogSec=$(prop WatchdogUSec))"
else
  fail "no watchdog restart: $(journalctl -u scriptd -n 10 --no-pager -o cat)"
fi
check "the journal names the watchdog" sh -c "journalctl -u scriptd -o cat | grep -qi 'watchdog timeout'"

# What the sandbox looks like from the outside (for the hardening notes in operations.md).
pid=$(prop MainPID)
# The last mount of a path is the one the service sees.
topmost() { awk -v p="$1" '$5==p {o=$6} END {print o}' "/proc/$pid/mountinfo"; }
check "/ and /etc/scriptd are read-only for the service (ProtectSystem=strict, ReadOnlyPaths=)" \
  sh -c "case '$(topmost /)' in ro*) ;; *) exit 1;; esac; case '$(topmost /etc/scriptd)' in ro*) ;; *) exit 1;; esac"
note "PrivateUsers uid_map: $(tr -s ' ' </proc/$pid/uid_map | tr '\n' ';')"
note "mounts: $(awk '$5=="/"||$5=="/tmp"||$5=="/home"||$5=="/proc"||$5=="/proc/sys"||$5=="/dev"||$5=="/var/lib/scriptd"||$5=="/etc/scriptd" {print $5" "$6" "$NF}' /proc/$pid/mountinfo | sort -u | tr '\n' ';')"
note "devices: $(ls /proc/$pid/root/dev | tr '\n' ' ')"
note "namespaces differing from PID 1: $(for ns in ipc mnt net pid user uts cgroup; do [ "$(readlink /proc/$pid/ns/$ns)" != "$(readlink /proc/1/ns/$ns)" ] && printf '%s ' $ns; done)"
journalctl -b --no-pager -o cat | grep -iE 'scriptd' | grep -iE 'not supported|unsupported|ignoring|cannot|failed to set' |
  sort -u | sed 's/^/NOTE journal: /' | tee -a "$log"

# --- A configuration error: failed, exit 78, no restart loop -------------------------------
printf '%s\nhots = "typo"\n' "$operator_config" >/etc/scriptd/local.toml
since=$(($(date +%s) + 1)) # the next whole second: nothing of the watchdog restart
sleep 2
systemctl restart scriptd 2>/dev/null
restarts=$(prop NRestarts)
sleep 8 # four times RestartSec=2s
scheduled=$(journalctl -u scriptd --since "@$since" -o cat | grep -c 'Scheduled restart job' || true)
if [ "$(prop ActiveState)" = failed ] && [ "$(prop ExecMainStatus)" = 78 ] &&
  [ "$(prop NRestarts)" = "$restarts" ] && [ "$scheduled" = 0 ]; then
  pass "unknown key: failed with exit 78, no restart in 8 s ($(journalctl -u scriptd --since "@$since" -o cat | grep -m1 -o 'mqtt.hots.*'))"
else
  fail "unknown key: state=$(prop ActiveState) status=$(prop ExecMainStatus) restarts $restarts -> $(prop NRestarts), $scheduled scheduled"
  journalctl -u scriptd --since "@$since" -o short-precise --no-pager | tee -a "$log"
fi
printf '%s\n' "$operator_config" >/etc/scriptd/local.toml
systemctl reset-failed scriptd

# --- Hardening as this systemd applies it -------------------------------------------------
security=$(systemd-analyze security --no-pager scriptd 2>&1)
level=$(echo "$security" | sed -n 's/.*Overall exposure level for scriptd.service: \([0-9.]*\).*/\1/p')
if [ -n "$level" ] && awk "BEGIN{exit !($level <= 2.0)}"; then
  pass "systemd-analyze security scriptd: $level (<= 2.0)"
else
  fail "systemd-analyze security scriptd: '$level'"
  echo "$security"
fi
echo "$security" | grep -E '^✗' | sed 's/^/NOTE exposed: /' | tee -a "$log"
journalctl -b --no-pager -o cat _PID=1 | grep -iE 'scriptd.service.*(ignor|not supported|fail|unsupported)|(ignor|not supported).*scriptd' |
  sort -u | sed 's/^/NOTE pid1: /' | tee -a "$log"

# --- The broker over mutual TLS, the MQTT password as a systemd credential -----------------
# /root/tls (made by test-deb.sh): ca.pem, server.pem/.key (localhost, 127.0.0.1) and
# client.pem/.key, signed by that CA. Mosquitto keeps its plain listener for the checks
# below and gets a TLS one on 8883 that wants a client certificate and a password.
tls=/root/tls
mqtt_password="deb-$(date +%s%N)"
install -d -m 0755 /etc/mosquitto/certs
install -m 0644 "$tls/ca.pem" "$tls/server.pem" /etc/mosquitto/certs/
install -m 0600 -o mosquitto "$tls/server.key" /etc/mosquitto/certs/
mosquitto_passwd -b -c /etc/mosquitto/passwd scriptd "$mqtt_password" &&
  chown mosquitto /etc/mosquitto/passwd && chmod 0600 /etc/mosquitto/passwd
printf '%s\n' 'per_listener_settings true' 'listener 1883 127.0.0.1' 'allow_anonymous true' \
  'listener 8883 127.0.0.1' 'cafile /etc/mosquitto/certs/ca.pem' \
  'certfile /etc/mosquitto/certs/server.pem' 'keyfile /etc/mosquitto/certs/server.key' \
  'require_certificate true' 'allow_anonymous false' 'password_file /etc/mosquitto/passwd' \
  >/etc/mosquitto/conf.d/scriptd-tls.conf
systemctl restart mosquitto
check "mosquitto listens with TLS on 8883" wait_for 20 bash -c 'exec 3<>/dev/tcp/127.0.0.1/8883'
install -d -m 0750 -g scriptd /etc/scriptd/tls
install -m 0640 -g scriptd "$tls/ca.pem" "$tls/client.pem" "$tls/client.key" /etc/scriptd/tls/
printf '%s\n' "$mqtt_password" >/etc/scriptd/mqtt-password
chmod 0600 /etc/scriptd/mqtt-password
# The drop-in docs/operations.md shows: the credential, and the key naming it only in the
# service's environment (operator commands run outside the unit do not need it).
mkdir -p /etc/systemd/system/scriptd.service.d
printf '%s\n' '[Service]' 'LoadCredential=mqtt-password:/etc/scriptd/mqtt-password' \
  'Environment=SCRIPTD__MQTT__PASSWORD_FILE=$CREDENTIALS_DIRECTORY/mqtt-password' \
  >/etc/systemd/system/scriptd.service.d/mqtt-password.conf
tls_config='[mqtt]
host = "127.0.0.1"
port = 8883
username = "scriptd"

[mqtt.tls]
enabled = true
ca_file = "/etc/scriptd/tls/ca.pem"
client_cert_file = "/etc/scriptd/tls/client.pem"
client_key_file = "/etc/scriptd/tls/client.key"'
printf '%s\n' "$tls_config" >/etc/scriptd/local.toml
check "check-config accepts the TLS configuration (files readable by scriptd)" \
  runuser -u scriptd -- scriptd --config /etc/scriptd check-config
systemctl daemon-reload
systemctl restart scriptd
if wait_for 30 sh -c "[ \$(curl -s -o /dev/null -w '%{http_code}' $api/healthz) = 200 ]"; then
  pass "/healthz 200 with the broker on 8883 over mutual TLS, password from LoadCredential="
else
  fail "TLS broker: /healthz $(curl -s "$api/healthz"); $(journalctl -u scriptd -n 5 --no-pager -o cat)"
fi
# The clients check the broker's name: localhost (a bare container may not list it).
grep -qw localhost /etc/hosts || echo '127.0.0.1 localhost' >>/etc/hosts
tls_client=(-h localhost -p 8883 --cafile "$tls/ca.pem" --cert "$tls/client.pem" --key "$tls/client.key"
  -u scriptd -P "$mqtt_password")
mosquitto_sub "${tls_client[@]}" -t 'vms/users/+/reactions' -v -C 1 -W 30 >/root/push-tls.txt 2>&1 &
sub=$!
sleep 1
mosquitto_pub "${tls_client[@]}" -q 1 -t vms/analytics/events/5 \
  -m "{\"id\":\"deb-tls-1\",\"event_id\":1,\"camera_id\":5,\"occurred_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"data\":{}}"
wait "$sub"
if grep -q "^vms/users/$user/reactions .*\"occurrence_id\":\"deb-tls-1\"" /root/push-tls.txt; then
  pass "occurrence deb-tls-1 published over TLS reached the subscriber as a push over TLS"
else
  fail "no push for deb-tls-1: $(cat /root/push-tls.txt)"
fi
# A CA file that does not sign the broker's certificate: active, broker down with the reason;
# the fixed file is read at the next reconnect.
install -m 0640 -g scriptd "$tls/client.pem" /etc/scriptd/tls/ca.pem
systemctl restart scriptd
if wait_for 30 sh -c "curl -s $api/healthz | grep -q UnknownIssuer"; then
  pass "wrong CA: $(prop ActiveState), /healthz $(curl -s "$api/healthz" | grep -o '"broker":{[^}]*}')"
else
  fail "wrong CA: state=$(prop ActiveState) /healthz $(curl -s "$api/healthz")"
fi
install -m 0640 -g scriptd "$tls/ca.pem" /etc/scriptd/tls/
check "the fixed CA file is used at the next reconnect (no restart)" \
  wait_for 30 sh -c "[ \$(curl -s -o /dev/null -w '%{http_code}' $api/healthz) = 200 ]"
systemctl stop scriptd
rm -f /etc/systemd/system/scriptd.service.d/mqtt-password.conf
# The operator's own files (not the package's): gone before the purge check below.
rm -rf /etc/scriptd/tls /etc/scriptd/mqtt-password
systemctl daemon-reload
printf '%s\n' "$operator_config" >/etc/scriptd/local.toml

# --- Remove keeps the state and the user; purge removes both ------------------------------
apt-get remove -y scriptd >>/root/apt.log 2>&1
check "remove keeps /var/lib/scriptd and the user" sh -c 'test -e /var/lib/scriptd/scriptd.db && id -u scriptd'
apt-get purge -y scriptd >>/root/apt.log 2>&1
check "purge removes /var/lib/scriptd, /etc/scriptd and the user" \
  sh -c '! test -e /var/lib/scriptd && ! test -e /etc/scriptd && ! id -u scriptd'

finish
