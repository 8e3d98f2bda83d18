#!/bin/sh
# Guest side of the arm64 system rig, run as root over ssh:
#   ssh ... sh -s ACTION [ARG...] < guest.sh
set -eu
action=$1
shift

cfs=/sys/kernel/config/gpio-sim/rig
sim_dir() {
	echo "/sys/devices/platform/$(cat $cfs/dev_name)/$(cat $cfs/gpio-bank0/chip_name)"
}

case "$action" in
gpiosim-unit)
	# A gpio-sim chip with the four header lines a Pi's front panel uses,
	# created at every boot before hl7edge starts (configfs is not
	# persistent), like the SoC's own GPIO chip on a real board.
	cat >/usr/local/sbin/hl7edge-rig-gpiosim <<'EOF'
#!/bin/sh
set -e
modprobe gpio-sim
c=/sys/kernel/config/gpio-sim/rig
[ -d $c ] && exit 0
mkdir $c $c/gpio-bank0
echo 4 > $c/gpio-bank0/num_lines
i=0
for n in GPIO17 GPIO27 GPIO22 GPIO23; do
	mkdir $c/gpio-bank0/line$i
	echo $n > $c/gpio-bank0/line$i/name
	i=$((i + 1))
done
echo 1 > $c/live
udevadm settle
EOF
	chmod 0755 /usr/local/sbin/hl7edge-rig-gpiosim
	cat >/etc/systemd/system/hl7edge-rig-gpiosim.service <<'EOF'
[Unit]
Description=hl7edge rig: gpio-sim chip with lines GPIO17, GPIO27, GPIO22, GPIO23
DefaultDependencies=no
After=systemd-modules-load.service systemd-udevd.service sys-kernel-config.mount
Before=hl7edge.service sysinit.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/hl7edge-rig-gpiosim
[Install]
WantedBy=sysinit.target
EOF
	systemctl daemon-reload
	systemctl enable --now hl7edge-rig-gpiosim.service >/dev/null 2>&1
	d=$(sim_dir)
	echo "chip /dev/$(cat $cfs/gpio-bank0/chip_name) $(stat -c '%U:%G %a' /dev/$(cat $cfs/gpio-bank0/chip_name)) lines $(ls -d "$d"/sim_gpio* | wc -l)"
	;;
chip)
	echo "/dev/$(cat $cfs/gpio-bank0/chip_name)"
	;;
sample)
	# Prints "t sys link act fault" every time a value changes, for $1
	# seconds, reading gpio-sim's view of the lines the daemon drives.
	# Shell builtins only: a fork costs about 0.1 s under TCG, which would
	# miss the 200 ms flashes of a fault code. Times are /proc/uptime's.
	d=$(sim_dir)
	read -r up _ </proc/uptime
	end=$((${up%.*} + $1))
	last=
	now=0
	while [ "$now" -lt "$end" ]; do
		read -r a <$d/sim_gpio0/value
		read -r b <$d/sim_gpio1/value
		read -r c <$d/sim_gpio2/value
		read -r f <$d/sim_gpio3/value
		read -r up _ </proc/uptime
		now=${up%.*}
		if [ "$a $b $c $f" != "$last" ]; then
			echo "$up $a $b $c $f"
			last="$a $b $c $f"
		fi
	done
	;;
config)
	# The rig's configuration: the rpi board on the gpio-sim lines, MLLP and
	# an LIS01-A2 analyzer on the PCI 16550 UART, the file archive and an
	# MLLP destination on the host ($1 = host port, reached as 10.0.2.2).
	cat >/etc/hl7edge/hl7edge.yaml <<EOF
# hl7edge system rig (edited conffile)
device:
  id: rig-arm64
  board: rpi
spool:
  dir: /var/lib/hl7edge/spool
  max_bytes: 512MiB
admin:
  socket: /run/hl7edge/admin.sock
log:
  level: info
  format: text
sources:
  - name: mllp
    type: mllp
    listen: 0.0.0.0:2575
  - name: analyzer
    type: serial
    device: /dev/ttyS0
    baud: 9600
    framing: lis01-a2
destinations:
  - name: archive
    type: file
    dir: /var/lib/hl7edge/out
  - name: upstream
    type: mllp
    address: 10.0.2.2:$1
    timeout: 10s
leds:
  sys: GPIO17
  link: GPIO27
  act: GPIO22
  fault: GPIO23
EOF
	hl7edge config check /etc/hl7edge/hl7edge.yaml
	;;
archived)
	# Control IDs (MSH-10) of the messages in the file archive.
	find /var/lib/hl7edge/out -name '*.hl7' -print0 | xargs -0 -r cat | tr '\r' '\n' | grep '^MSH' | cut -d'|' -f10 | sort -u
	;;
*)
	echo "guest.sh: unknown action $action" >&2
	exit 2
	;;
esac
