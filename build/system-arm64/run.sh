#!/usr/bin/env bash
# The arm64 system rig (make system-arm64): Debian bookworm arm64 with systemd
# booted under qemu-system-aarch64 -M virt (TCG), the project's .deb
# installed, and the checks of issue 19 run inside the guest:
#
#   build/system-arm64/run.sh OLD.deb NEW.deb
#
# OLD is installed first; NEW (a higher version) is the upgrade. The guest
# image is built once by image.sh and cached (HL7EDGE_RIG_CACHE, default
# /var/cache/hl7edge-system-arm64); every run boots a throw-away qcow2
# overlay of it. Ports are forwarded to 127.0.0.1 only. Each check prints
# one line "NAME PASS|FAIL detail"; the run ends with the totals and exits 1
# if any check failed (HL7EDGE_RIG_PART=defects stops after the checks of
# the three defects of issue 19; HL7EDGE_RIG_PART=firmware runs the install,
# the unit checks and then only the firmware updates of issue 14, which the
# full run does after the .deb upgrade). Work files (console logs, journals, ledgers) stay in
# the directory printed at the start.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ne 2 ]; then
	echo "usage: $0 OLD.deb NEW.deb" >&2
	exit 2
fi
old=$(realpath "$1")
new=$(realpath "$2")
if [ "$(id -u)" != 0 ]; then
	echo "run.sh: needs root (mmdebstrap, binfmt_misc)" >&2
	exit 1
fi
for tool in qemu-system-aarch64 qemu-img ssh scp python3; do
	command -v "$tool" >/dev/null || {
		echo "run.sh: $tool is missing; apt-get install qemu-system-arm qemu-utils openssh-client python3" >&2
		exit 1
	}
done

cache=${HL7EDGE_RIG_CACHE:-/var/cache/hl7edge-system-arm64}
img=$("$here/image.sh" "$cache" | tail -1) || exit 1
work=$(mktemp -d /tmp/hl7edge-rig.XXXXXX)
echo "rig: image $img, work files in $work"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ssh_port=$(free_port)
mllp_port=$(free_port)
recv_port=$(free_port)
results=$work/results.txt
: >"$results"
passed=0
failed=0

report() { # NAME PASS|FAIL DETAIL
	printf '%-34s %s  %s\n' "$1" "$2" "$3" | tee -a "$results"
	if [ "$2" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
verdict() { # NAME CONDITION-EXIT-STATUS DETAIL
	if [ "$2" = 0 ]; then report "$1" PASS "$3"; else report "$1" FAIL "$3"; fi
}
sshopts=(-q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=10 -o ServerAliveInterval=5 -o ServerAliveCountMax=6 -i "$img/id_ed25519")
# ssh exits 255 when it cannot connect (a loaded host can miss the 10 s
# connect timeout); a command's own status is passed through.
vm() {
	local rc
	for _ in 1 2 3; do
		ssh "${sshopts[@]}" -p "$ssh_port" root@127.0.0.1 "$@"
		rc=$?
		[ "$rc" != 255 ] && return "$rc"
		sleep 3
	done
	return 255
}
guest() { vm sh -s "$@" <"$here/guest.sh"; }
tool() { python3 "$here/hosttool.py" "$@"; }

qpid=
recv_pid=
pty=
cleanup() {
	[ -n "$recv_pid" ] && kill "$recv_pid" 2>/dev/null
	for p in $https_pid $mosq_pid $sub_pid; do kill "$p" 2>/dev/null; done
	[ -n "$qpid" ] && kill -9 "$qpid" 2>/dev/null
	true
}
trap cleanup EXIT

qemu-img create -q -f qcow2 -b "$img/disk.img" -F raw "$work/disk.qcow2"

# boot LABEL: start the VM and wait for ssh; sets qpid, pty, boot_s.
boot() {
	local label=$1 t0 i
	t0=$(date +%s.%N)
	# pauth-impdef: the QARMA pointer-authentication cipher of -cpu max costs
	# TCG dearly; the implementation-defined one is as good for a test.
	qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp 2 -m 1024 \
		-display none -monitor none \
		-kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
		-append "root=/dev/vda rw console=ttyAMA0" \
		-drive "file=$work/disk.qcow2,format=qcow2,if=none,id=hd" -device virtio-blk-pci,drive=hd \
		-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$mllp_port-:2575" \
		-device virtio-net-pci,netdev=n0 \
		-chardev pty,id=ser1 -device pci-serial,chardev=ser1 \
		-serial "file:$work/console-$label.log" >"$work/qemu-$label.out" 2>&1 &
	qpid=$!
	for i in $(seq 50); do
		pty=$(sed -n 's/.*redirected to \(\/dev\/pts\/[0-9]*\) (label ser1).*/\1/p' "$work/qemu-$label.out")
		[ -n "$pty" ] && break
		sleep 0.2
	done
	for i in $(seq 300); do
		if ! kill -0 "$qpid" 2>/dev/null; then
			report "boot ($label)" FAIL "qemu exited: $(tail -3 "$work/qemu-$label.out")"
			return 1
		fi
		if vm true 2>/dev/null; then
			boot_s=$(python3 -c "import time; print('%.0f' % (time.time() - $t0))")
			report "boot ($label)" PASS "${boot_s} s from qemu start to ssh; $(vm systemd-analyze 2>/dev/null | head -1)"
			return 0
		fi
		sleep 3
	done
	report "boot ($label)" FAIL "no ssh after 900 s; see $work/console-$label.log"
	return 1
}

# wait_for SECONDS COMMAND...: polls the guest command until it succeeds.
wait_for() {
	local n=$1
	shift
	for _ in $(seq "$n"); do
		vm "$@" >/dev/null 2>&1 && return 0
		sleep 1
	done
	return 1
}

# The receiver runs as a direct child (not through the tool function, whose
# subshell would be what recv_pid names), so that stop_receiver stops it.
start_receiver() {
	python3 "$here/hosttool.py" receive "$recv_port" "$work/received.txt" >>"$work/receiver.log" 2>&1 &
	recv_pid=$!
	sleep 0.5
}
stop_receiver() {
	[ -n "$recv_pid" ] && kill "$recv_pid" 2>/dev/null
	wait "$recv_pid" 2>/dev/null
	recv_pid=
}

# missing LEDGER FILE: how many IDs of LEDGER are not in FILE.
missing() { sort -u "$1" | comm -23 - <(sort -u "$2") | wc -l; }

finish() {
	vm "journalctl -b -o short-monotonic" >"$work/journal-all.txt" 2>/dev/null
	vm systemctl poweroff >/dev/null 2>&1
	for _ in $(seq 60); do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
	echo
	echo "rig: $passed passed, $failed failed (details: $work)"
	[ "$failed" = 0 ]
	exit
}

# --- firmware updates under the real unit (HL7EDGE_RIG_PART=firmware) -------
# The host side of docs/operations.md, "Firmware updates with automatic
# roll-back": a
# throw-away minisign key, a newer arm64 build (another -X main.version), an
# image that cannot start, an HTTPS server for them with a CA of its own
# (reached from the guest as 10.0.2.2), and a mosquitto broker on 127.0.0.1
# through which the signed commands go, as an operator's would.
fw=$work/fw
fwver=9.9.9-rigfw
badver=9.9.10-cannot-start
fwdev=rig-arm64
https_pid=
mosq_pid=
sub_pid=
fw_prepare() {
	local repo
	repo=$(cd "$here/../.." && pwd)
	for tool in go minisign mosquitto mosquitto_pub mosquitto_sub openssl; do
		command -v "$tool" >/dev/null || {
			echo "run.sh: $tool is missing for the firmware part; apt-get install minisign mosquitto mosquitto-clients openssl" >&2
			return 1
		}
	done
	mkdir -p "$fw/srv"
	(cd "$repo" && go build -o "$fw/hl7edge" ./cmd/hl7edge &&
		GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$fwver" -o "$fw/srv/hl7edge-$fwver" ./cmd/hl7edge) >"$fw/build.log" 2>&1 || {
		echo "run.sh: building the firmware images failed: $(tail -3 "$fw/build.log")" >&2
		return 1
	}
	printf '#!/bin/sh\necho "rig: this image cannot start" >&2\nexit 3\n' >"$fw/srv/hl7edge-$badver"
	minisign -G -W -p "$fw/fleet.pub" -s "$fw/fleet.key" >/dev/null
	minisign -S -s "$fw/fleet.key" -m "$fw/srv/hl7edge-$fwver" >/dev/null &&
		minisign -S -s "$fw/fleet.key" -m "$fw/srv/hl7edge-$badver" >/dev/null || return 1
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=hl7edge rig firmware CA" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
		-keyout "$fw/ca.key" -out "$fw/ca.pem" 2>/dev/null &&
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=10.0.2.2" \
			-keyout "$fw/srv.key" -out "$fw/srv.csr" 2>/dev/null &&
		openssl x509 -req -in "$fw/srv.csr" -CA "$fw/ca.pem" -CAkey "$fw/ca.key" -CAcreateserial -days 2 \
			-extfile <(printf 'subjectAltName=IP:10.0.2.2\nextendedKeyUsage=serverAuth\n') -out "$fw/srv.pem" 2>/dev/null || return 1
	https_port=$(free_port)
	mqtt_port=$(free_port)
	# hosttool runs as a direct child so that cleanup stops it.
	python3 "$here/hosttool.py" serve-https "$https_port" "$fw/srv" "$fw/srv.pem" "$fw/srv.key" >"$fw/https.log" 2>&1 &
	https_pid=$!
	printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt_port" >"$fw/mosquitto.conf"
	mosquitto -c "$fw/mosquitto.conf" >"$fw/mosquitto.log" 2>&1 &
	mosq_pid=$!
	sleep 1
	mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -v -t "hl7edge/$fwdev/#" >"$fw/mqtt.log" 2>&1 &
	sub_pid=$!
}

# fw_send FILE VERSION: signs a firmware-update for FILE and publishes it.
fw_send() {
	"$fw/hl7edge" firmware args --url "https://10.0.2.2:$https_port/$(basename "$1")" --version "$2" "$1" >"$fw/args-$2.json" &&
		"$fw/hl7edge" command sign --key "$fw/fleet.key" --device "$fwdev" --expires 15m --id "rig-fw-$2" \
			firmware-update "$(cat "$fw/args-$2.json")" >"$fw/cmd-$2.json" &&
		mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -t "hl7edge/$fwdev/cmd/req" -f "$fw/cmd-$2.json"
}
fw_version() { vm "hl7edge status --json" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["health"]["version"])' 2>/dev/null; }
# fw_state FIELD: a field of the gateway's firmware state file.
fw_state() { vm "hl7edge firmware state" 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1',''))" 2>/dev/null; }
since() { python3 -c "import time; print('%.0f' % (time.time() - $1))"; }
unit_show() { vm systemctl show hl7edge -p MainPID -p NRestarts -p ActiveState -p SubState -p ExecMainStatus | tr '\n' ' '; }

firmware_checks() {
	local t0 t_switch t_commit t_rb v st before after i pid now wd jsince
	if ! fw_prepare; then
		report "firmware: host side" FAIL "see $fw"
		return
	fi
	scp "${sshopts[@]}" -P "$ssh_port" "$fw/ca.pem" root@127.0.0.1:/etc/hl7edge/firmware-ca.pem
	vm "chown root:hl7edge /etc/hl7edge/firmware-ca.pem && chmod 0640 /etc/hl7edge/firmware-ca.pem && cat >>/etc/hl7edge/hl7edge.yaml" <<CFG
mqtt:
  broker: tcp://10.0.2.2:$mqtt_port
  health_interval: 5s
trust:
  keys: [$(tail -1 "$fw/fleet.pub")]
firmware:
  ca_file: /etc/hl7edge/firmware-ca.pem
  trial: 20s
CFG
	vm "hl7edge config check /etc/hl7edge/hl7edge.yaml && systemctl restart hl7edge" >>"$fw/guest.log" 2>&1
	wait_for 120 systemctl is-active -q hl7edge
	for _ in $(seq 60); do grep -q "hl7edge/$fwdev/status .*online" "$fw/mqtt.log" && break; sleep 1; done
	before=$(fw_version)
	grep -q "hl7edge/$fwdev/status .*online" "$fw/mqtt.log"
	verdict "firmware: gateway on the host broker" $? "version $before online on mosquitto 127.0.0.1:$mqtt_port as 10.0.2.2; trust.keys the rig's throw-away key; firmware.trial 20s"

	# 1. A signed update to a newer arm64 build: switched and committed.
	before=$(unit_show)
	# The journal from here on: the full run's watchdog check, minutes
	# before, left the Go runtime's SIGABRT dump in it.
	jsince=$(vm "date '+%Y-%m-%d %H:%M:%S'")
	t0=$(date +%s.%N)
	fw_send "$fw/srv/hl7edge-$fwver" "$fwver"
	t_switch=
	for _ in $(seq 300); do
		[ "$(fw_version)" = "$fwver" ] && t_switch=$(since "$t0") && break
		sleep 1
	done
	t_commit=
	for _ in $(seq 300); do
		[ "$(fw_state state)" = committed ] && t_commit=$(since "$t0") && break
		sleep 1
	done
	after=$(unit_show)
	# _SYSTEMD_UNIT: the daemon's own lines, each a slog record.
	vm "journalctl _SYSTEMD_UNIT=hl7edge.service -o cat --since '$jsince'" >"$fw/journal-update.txt"
	i=$(grep -v '^time=' "$fw/journal-update.txt" | grep -v -c '^$')
	[ -n "$t_switch" ] && [ -n "$t_commit" ] && grep -q 'msg="firmware download"' "$fw/journal-update.txt" &&
		grep -q 'msg="firmware committed"' "$fw/journal-update.txt" && [ "$i" = 0 ] &&
		grep -q "hl7edge/$fwdev/cmd/res .*rig-fw-$fwver.*successful" "$fw/mqtt.log"
	verdict "firmware: signed update under systemd" $? "running $fwver ${t_switch:-never} s after the command was published, committed ${t_commit:-never} s after it (trial 20s); guest clock: $(tool fwtimes "$fw/mqtt.log" "$fwver"); before: $before; after: $after; journal: $(grep -o 'msg="firmware committed".*' "$fw/journal-update.txt" | head -1), $i lines not from slog"

	# 3. The watchdog still restarts the updated version, which stays.
	pid=$(vm systemctl show -p MainPID --value hl7edge)
	t0=$(date +%s.%N)
	vm "kill -STOP $pid"
	now=
	for _ in $(seq 150); do
		now=$(vm systemctl show -p MainPID --value hl7edge 2>/dev/null)
		if [ -n "$now" ] && [ "$now" != 0 ] && [ "$now" != "$pid" ] && vm systemctl is-active -q hl7edge; then break; fi
		now=
		sleep 1
	done
	wd=$(vm "journalctl -u hl7edge -o cat --since '-4min' | grep -i 'watchdog timeout' | tail -1")
	v=
	for _ in $(seq 60); do v=$(fw_version); [ -n "$v" ] && break; sleep 1; done
	[ -n "$now" ] && [ -n "$wd" ] && [ "$v" = "$fwver" ] && [ "$(fw_state state)" = committed ]
	verdict "firmware: watchdog on the update" $? "SIGSTOP pid $pid of $fwver; new pid ${now:-none} after $(since "$t0") s; runs $v, state $(fw_state state); systemd: $wd"

	# 2. A signed image that cannot start: systemd and the launcher bring
	# the previous version back, the state and the alarm say why.
	wait_for 60 systemctl is-active -q hl7edge
	sleep 3
	before=$(unit_show)
	t0=$(date +%s.%N)
	fw_send "$fw/srv/hl7edge-$badver" "$badver"
	t_rb=
	for _ in $(seq 300); do
		if [ "$(fw_state state)" = rolled_back ] && [ "$(fw_version)" = "$fwver" ]; then t_rb=$(since "$t0"); break; fi
		sleep 1
	done
	after=$(unit_show)
	st=$(fw_state reason)
	vm "journalctl -u hl7edge -o cat --since '-10min'" >"$fw/journal-rollback.txt"
	sleep 2
	[ -n "$t_rb" ] && echo "$st" | grep -q "$badver" && grep -q "hl7edge/$fwdev/alarm .*firmware_rolled_back.*$badver" "$fw/mqtt.log" &&
		grep -q "rig: this image cannot start" "$fw/journal-rollback.txt"
	verdict "firmware: cannot-start image rolled back" $? "back on $fwver ${t_rb:-never} s after the command; guest clock: $(tool fwtimes "$fw/mqtt.log" "$badver"); state rolled_back: $st; alarm: $(grep -o 'firmware_rolled_back.*' "$fw/mqtt.log" | tail -1 | cut -c1-200); before: $before; after: $after"
	vm "journalctl -u hl7edge -o short-monotonic --since '-30min'" >"$fw/journal.txt" 2>/dev/null
}

boot first || exit 1

# --- gpio-sim -------------------------------------------------------------
out=$(guest gpiosim-unit 2>&1)
chip=$(guest chip)
echo "$out" | grep -q "lines 4"
verdict "gpio-sim chip" $? "$out (module built from linux-source-6.1 without its irq_sim part)"

# --- first install, with a gpio udev event while the package unpacks ------
scp "${sshopts[@]}" -P "$ssh_port" "$old" root@127.0.0.1:/root/old.deb
scp "${sshopts[@]}" -P "$ssh_port" "$new" root@127.0.0.1:/root/new.deb
vm "getent group gpio >/dev/null && echo 'the image has a gpio group' || echo 'no gpio group before install (plain Debian)'" | tee -a "$work/install.log"
vm "dpkg --unpack /root/old.deb && udevadm trigger --action=change --subsystem-match=gpio && udevadm settle && dpkg --configure hl7edge" >>"$work/install.log" 2>&1
grp=$(vm "stat -c %G $chip")
udevlog=$(vm "journalctl -b -u systemd-udevd -o cat | grep -i 'unknown group' | tail -1")
[ "$grp" = gpio ]
verdict "udev: chip group at first install" $? "$chip group $grp after install with a gpio event during unpack${udevlog:+; udevd: $udevlog}"
wait_for 120 systemctl is-active -q hl7edge
verdict "first install starts the unit" $? "$(vm systemctl is-active hl7edge) with the packaged configuration (board: sim)"

# --- the rig's configuration: rpi board, serial source, two destinations --
guest config "$recv_port" >>"$work/install.log" 2>&1
vm systemctl restart hl7edge
wait_for 120 systemctl is-active -q hl7edge
sleep 3
show=$(vm systemctl show hl7edge -p Type -p ActiveState -p SubState -p NRestarts -p WatchdogUSec -p MainPID)
pid=$(echo "$show" | sed -n 's/^MainPID=//p')
echo "$show" | grep -qx Type=notify && echo "$show" | grep -qx ActiveState=active && vm "journalctl -u hl7edge -o cat | grep -q 'hl7edge started'"
verdict "unit: Type=notify READY" $? "$(echo "$show" | tr '\n' ' ')"

st=$(vm "ps -o user= -p $pid; grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/$pid/status | tr -s '\t ' ' '" | tr '\n' ' ')
echo "$st" | grep -q "^hl7edge " && echo "$st" | grep -q "NoNewPrivs: 1" && echo "$st" | grep -q "Seccomp: 2" && echo "$st" | grep -q "CapEff: 0000000000000000"
verdict "unit: user and hardening" $? "$st"
sec=$(vm "systemd-analyze security hl7edge --no-pager 2>/dev/null | tail -1")
report "unit: systemd-analyze security" PASS "$sec"

paths=$(vm "stat -c '%U:%G %a %n' /usr/bin/hl7edge /etc/hl7edge /etc/hl7edge/hl7edge.yaml /var/lib/hl7edge /var/lib/hl7edge/spool /var/lib/hl7edge/out /run/hl7edge /run/hl7edge/admin.sock 2>&1")
echo "$paths" >"$work/paths.txt"
# The spool and the archive hold patient data: the service user's, and
# nobody else's (mode 750 or 700).
echo "$paths" | grep -Eq "hl7edge:hl7edge 7[05]0 /var/lib/hl7edge/spool" && echo "$paths" | grep -Eq "hl7edge:hl7edge 7[05]0 /var/lib/hl7edge/out" && vm "test -S /run/hl7edge/admin.sock && test -x /usr/bin/hl7edge && { hl7edge status >/dev/null; [ \$? -le 1 ]; }"
verdict "paths: spool, admin socket, config" $? "$(echo "$paths" | tr '\n' ';')"
# docs/operations.md: firmware.dir defaults to /var/lib/hl7edge/firmware, "writable under
# the unit's StateDirectory", and the launcher execs images from it. Probe
# both as the service user in the unit's own mount namespace
# (ProtectSystem=strict, PrivateTmp): write an image there and run it.
fwprobe=$(vm "nsenter -t $pid -m setpriv --reuid=hl7edge --regid=hl7edge --init-groups sh -c 'd=/var/lib/hl7edge/firmware; mkdir -p -m 0700 \$d && cp /usr/bin/hl7edge \$d/.rig-probe && \$d/.rig-probe version; rc=\$?; rm -f \$d/.rig-probe; exit \$rc'" 2>&1)
verdict "paths: firmware dir" $? "as hl7edge in the unit's mount namespace, an image written to /var/lib/hl7edge/firmware runs: $fwprobe"
if [ "${HL7EDGE_RIG_PART:-all}" = firmware ]; then
	firmware_checks
	finish
fi
# _SYSTEMD_UNIT: what the daemon wrote, without systemd's own lines about the unit.
vm "journalctl _SYSTEMD_UNIT=hl7edge.service -o cat" >"$work/journal-first.txt"
unstructured=$(grep -v '^time=' "$work/journal-first.txt" | grep -v -c '^$')
[ "$unstructured" = 0 ] && grep -q 'msg="hl7edge started"' "$work/journal-first.txt"
verdict "logs: journal, structured only" $? "$(wc -l <"$work/journal-first.txt") lines from the daemon in the journal, $unstructured not from slog"
grep -q 'msg="spool opened".*waiting=' "$work/journal-first.txt"
verdict "logs: backlog line at start" $? "$(grep -o 'msg="spool opened".*' "$work/journal-first.txt" | tail -1)"

# --- MLLP from the host ------------------------------------------------------
start_receiver
tool send "$mllp_port" RIGMLLP1 RIGMLLP2 RIGMLLP3 RIGMLLP4 RIGMLLP5 >"$work/mllp.txt" 2>&1
aa=$(grep -c ' AA$' "$work/mllp.txt")
printf 'RIGMLLP%s\n' 1 2 3 4 5 >"$work/mllp-ids.txt"
for _ in $(seq 60); do
	[ "$(missing "$work/mllp-ids.txt" "$work/received.txt" 2>/dev/null)" = 0 ] && break
	sleep 1
done
guest archived >"$work/archived.txt"
[ "$aa" = 5 ] && [ "$(missing "$work/mllp-ids.txt" "$work/archived.txt")" = 0 ] && [ "$(missing "$work/mllp-ids.txt" "$work/received.txt")" = 0 ]
verdict "MLLP via forwarded port" $? "$aa/5 AA through 127.0.0.1:$mllp_port; $((5 - $(missing "$work/mllp-ids.txt" "$work/archived.txt")))/5 in the archive, $((5 - $(missing "$work/mllp-ids.txt" "$work/received.txt")))/5 at the host's MLLP receiver"

# --- LIS01-A2 on the guest's 16550 UART, wired to a host pty ----------------
lis=$(timeout 60 python3 "$here/hosttool.py" lis01 "$pty" RIGLIS01 2>&1)
sleep 2
guest archived >"$work/archived.txt"
echo "$lis" | grep -q "RIGLIS01 ACK" && grep -qx RIGLIS01 "$work/archived.txt"
verdict "serial: LIS01-A2 session" $? "host $pty -> guest /dev/ttyS0 (PCI 16550A, 9600 8N1): $lis; archived: $(grep -cx RIGLIS01 "$work/archived.txt")"

# --- LEDs on gpio-sim lines -------------------------------------------------
vm "hl7edge status --json" >"$work/status.json" 2>/dev/null
# ACT: one message a second from 3 s into the window (ssh itself may take
# a second or two to start the sampler on a loaded host).
(sleep 3 && for i in 1 2 3 4 5; do tool send "$mllp_port" "RIGACT$i"; sleep 1; done >"$work/act-send.txt" 2>&1) &
spid=$!
guest sample 10 >"$work/leds.txt"
wait "$spid"
python3 "$here/ledcheck.py" "$work/status.json" "$work/leds.txt" >"$work/leds-verdict.txt"
v=$(cat "$work/leds-verdict.txt")
[ "${v%% *}" = PASS ]
verdict "GPIO: LED patterns on gpio-sim" $? "${v#* } (10 s of gpio-sim line values against status --json)"

# --- EACCES on the chip: the message and the remedy (defect 2) ---------------
vm "chgrp root $chip && chmod 0600 $chip && systemctl restart hl7edge" 2>/dev/null
sleep 8
vm "journalctl _SYSTEMD_UNIT=hl7edge.service -o cat --since '-10s'" >"$work/journal-eacces.txt"
line=$(grep -m1 'msg="hl7edge cannot run"' "$work/journal-eacces.txt")
unstructured=$(grep -v '^time=' "$work/journal-eacces.txt" | grep -v -c '^$')
echo "$line" | grep -q "$chip" && echo "$line" | grep -q 'udevadm trigger' && ! grep -q 'no usable GPIO character device (no /dev/gpiochip' "$work/journal-eacces.txt" && [ "$unstructured" = 0 ]
verdict "GPIO: EACCES reported as such" $? "$(echo "$line" | grep -o 'err=.*' | cut -c1-260); $unstructured unstructured lines"
vm "udevadm trigger --action=add --subsystem-match=gpio && udevadm settle"
wait_for 60 systemctl is-active -q hl7edge
verdict "GPIO: the message's remedy works" $? "after udevadm trigger: $chip $(vm "stat -c %G $chip"), unit $(vm systemctl is-active hl7edge)"
# HL7EDGE_RIG_PART=defects: stop here (install, unit, MLLP, serial, LEDs and
# the checks of the three defects), e.g. to show them failing on an old .deb.
if [ "${HL7EDGE_RIG_PART:-all}" = defects ]; then
	finish
fi

# --- the systemd watchdog restarts a hung daemon ----------------------------
sleep 3
pid=$(vm systemctl show -p MainPID --value hl7edge)
t0=$(date +%s)
vm "kill -STOP $pid"
restarted=1
for _ in $(seq 120); do
	now=$(vm systemctl show -p MainPID --value hl7edge 2>/dev/null)
	if [ -n "$now" ] && [ "$now" != 0 ] && [ "$now" != "$pid" ] && vm systemctl is-active -q hl7edge; then
		restarted=0
		break
	fi
	sleep 1
done
wd=$(vm "journalctl -u hl7edge -o cat --since '-3min' | grep -m1 -i 'watchdog timeout'")
[ "$restarted" = 0 ] && [ -n "$wd" ]
verdict "watchdog: hung daemon restarted" $? "SIGSTOP pid $pid; new pid $now after $(($(date +%s) - t0)) s (WatchdogSec=30s); systemd: $wd"

# --- systemctl stop under load drains cleanly -------------------------------
wait_for 60 systemctl is-active -q hl7edge
sleep 3
tool load "$mllp_port" "$work/ledger-stop.txt" 12 4 >"$work/load-stop.txt" 2>&1 &
lpid=$!
sleep 5
stop_ms=$(vm 's=$(date +%s%N); systemctl stop hl7edge; e=$(date +%s%N); echo $(((e - s) / 1000000))')
res=$(vm systemctl show hl7edge -p Result -p ExecMainStatus -p ExecMainCode | tr '\n' ' ')
stopped=$(vm "journalctl -u hl7edge -o cat --since '-1min' | grep -c 'msg=stopped'")
wait "$lpid"
vm systemctl start hl7edge
wait_for 120 systemctl is-active -q hl7edge
for _ in $(seq 60); do
	guest archived >"$work/archived.txt"
	[ "$(missing "$work/ledger-stop.txt" "$work/archived.txt")" = 0 ] && break
	sleep 2
done
lost=$(missing "$work/ledger-stop.txt" "$work/archived.txt")
echo "$res" | grep -q "Result=success" && echo "$res" | grep -q "ExecMainStatus=0" && [ "$stopped" -ge 1 ] && [ "$lost" = 0 ]
verdict "stop under load drains" $? "systemctl stop took ${stop_ms} ms; $res; $(cat "$work/load-stop.txt"); $lost of $(sort -u "$work/ledger-stop.txt" | wc -l) ACKed missing from the archive after start"

# --- power cut under load ---------------------------------------------------
stop_receiver # the upstream is down: a backlog builds for it
tool load "$mllp_port" "$work/ledger-cut.txt" 40 8 >"$work/load-cut.txt" 2>&1 &
lpid=$!
sleep 25
kill -9 "$qpid"
wait "$qpid" 2>/dev/null
qpid=
wait "$lpid"
acked=$(sort -u "$work/ledger-cut.txt" | wc -l)
report "power cut: qemu SIGKILL under load" PASS "$(cat "$work/load-cut.txt") (8 connections; SIGKILL after 25 s)"
boot after-cut || exit 1
wait_for 300 systemctl is-active -q hl7edge
vm "journalctl -b -u hl7edge -o cat" >"$work/journal-cut.txt"
backlog=$(grep -o 'msg="spool opened".*' "$work/journal-cut.txt" | head -1)
waiting=$(echo "$backlog" | sed -n 's/.*queued.upstream=\([0-9]*\).*/\1/p')
[ -n "$waiting" ] && [ "$waiting" -gt 0 ]
verdict "power cut: backlog logged at start" $? "$backlog"
start_receiver
for _ in $(seq 150); do
	guest archived >"$work/archived.txt"
	if [ "$(missing "$work/ledger-cut.txt" "$work/archived.txt")" = 0 ] && [ "$(missing "$work/ledger-cut.txt" "$work/received.txt")" = 0 ]; then
		break
	fi
	sleep 2
done
lost_a=$(missing "$work/ledger-cut.txt" "$work/archived.txt")
lost_u=$(missing "$work/ledger-cut.txt" "$work/received.txt")
[ "$acked" -gt 0 ] && [ "$lost_a" = 0 ] && [ "$lost_u" = 0 ]
verdict "power cut: 0 ACKed lost" $? "$acked ACKed before the cut; lost: $lost_a in the archive, $lost_u at the upstream receiver; upstream backlog at start $waiting"

# --- upgrade keeps the edited conffile and the spool ------------------------
stop_receiver
tool send "$mllp_port" RIGUP01 RIGUP02 RIGUP03 RIGUP04 RIGUP05 RIGUP06 RIGUP07 RIGUP08 RIGUP09 RIGUP10 >/dev/null 2>&1
sleep 3
q_before=$(vm "hl7edge spool stats --json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["destinations"]["upstream"]["queued"])')
v_before=$(vm "dpkg-query -W -f '\${Version}' hl7edge")
vm "DEBIAN_FRONTEND=noninteractive apt-get install -y /root/new.deb" >"$work/upgrade.log" 2>&1
v_after=$(vm "dpkg-query -W -f '\${Version}' hl7edge")
wait_for 120 systemctl is-active -q hl7edge
q_after=$(vm "hl7edge spool stats --json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["destinations"]["upstream"]["queued"])')
vm "grep -q 'hl7edge system rig (edited conffile)' /etc/hl7edge/hl7edge.yaml"
kept=$?
[ "$v_before" != "$v_after" ] && [ "$kept" = 0 ] && [ "$q_before" -gt 0 ] && [ "$q_before" = "$q_after" ]
verdict "apt install newer: conffile, spool" $? "$v_before -> $v_after; edited conffile kept: $([ $kept = 0 ] && echo yes || echo no); upstream queue $q_before before, $q_after after; unit $(vm systemctl is-active hl7edge)"

firmware_checks

# --- remove keeps the spool; purge does what docs/operations.md says --------
vm "DEBIAN_FRONTEND=noninteractive apt-get remove -y hl7edge" >"$work/remove.log" 2>&1
rm_state=$(vm "test -e /usr/bin/hl7edge && echo binary-present || echo binary-removed; test -e /etc/hl7edge/hl7edge.yaml && echo config-kept; du -s --block-size=1K /var/lib/hl7edge/spool 2>/dev/null | cut -f1 | sed 's/^/spool-KiB=/'; systemctl is-active hl7edge" | tr '\n' ' ')
echo "$rm_state" | grep -q binary-removed && echo "$rm_state" | grep -q config-kept && echo "$rm_state" | grep -q 'spool-KiB=[1-9]'
verdict "apt remove keeps the spool" $? "$rm_state"
vm "DEBIAN_FRONTEND=noninteractive apt-get purge -y hl7edge" >"$work/purge.log" 2>&1
pg_state=$(vm "test -e /etc/hl7edge/hl7edge.yaml && echo config-present || echo config-purged; test -d /var/lib/hl7edge/spool && echo spool-kept; getent passwd hl7edge >/dev/null && echo user-kept; test -e /etc/systemd/system/multi-user.target.wants/hl7edge.service && echo still-enabled || echo enablement-gone" | tr '\n' ' ')
echo "$pg_state" | grep -q config-purged && echo "$pg_state" | grep -q spool-kept && echo "$pg_state" | grep -q user-kept && echo "$pg_state" | grep -q enablement-gone && grep -q "kept /var/lib/hl7edge" "$work/purge.log"
verdict "apt purge as docs/operations.md says" $? "$pg_state; $(grep -o 'hl7edge: kept /var/lib/hl7edge[^.]*' "$work/purge.log")"

finish
