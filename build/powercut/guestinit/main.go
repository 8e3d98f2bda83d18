// Command guestinit is /init of the power-cut rig's virtual machine (see
// build/powercut): it loads the kernel modules the rig packed, mounts the
// ext4 disk that holds the spool and the file destination with default
// options, brings up the network, starts the static hl7edge and serves the
// rig a two-command control port. Everything it reports goes to the serial
// console as lines starting with "init:".
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hl7edge/hl7edge/device/admin"
	"github.com/hl7edge/hl7edge/device/command"
	"golang.org/x/sys/unix"
)

const (
	disk       = "/dev/vda"
	dataDir    = "/data"
	outDir     = "/data/out"
	configPath = "/etc/hl7edge.yaml"
	socketPath = "/run/admin.sock"
	controlTCP = ":2576"
)

func say(f string, a ...any) { fmt.Printf("init: "+f+"\n", a...) }

func main() {
	say("started")
	if err := boot(); err != nil {
		say("FAILED %v", err)
		halt()
	}
	hl7edge := exec.Command("/hl7edge", "run", "--config", configPath)
	hl7edge.Stdout, hl7edge.Stderr = os.Stdout, os.Stdout
	if err := hl7edge.Start(); err != nil {
		say("FAILED start hl7edge: %v", err)
		halt()
	}
	exited := make(chan struct{})
	go func() {
		err := hl7edge.Wait()
		say("hl7edge exited: %v", err)
		close(exited)
	}()
	go serveControl(hl7edge, exited)
	// Stay up so the rig can read the console; it decides what happens next.
	select {}
}

func boot() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/run", "tmpfs"},
	} {
		_ = os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	order, err := os.ReadFile("/modules/order")
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(order)) {
		f, err := os.Open(filepath.Join("/modules", name))
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("load module %s: %w", name, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(disk); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within 30s", disk)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = os.MkdirAll(dataDir, 0o755)
	// Default options (data=ordered): what a Raspberry Pi's root file system
	// uses. Mounting replays the journal, so what follows is the disk as the
	// cut left it.
	if err := unix.Mount(disk, dataDir, "ext4", 0, ""); err != nil {
		return fmt.Errorf("mount %s: %w", disk, err)
	}
	left, _ := filepath.Glob(filepath.Join(outDir, ".tmp-*"))
	say("mounted tmp_left=%d", len(left))
	if err := network(); err != nil {
		return err
	}
	return nil
}

// network brings up lo and eth0 with qemu user networking's fixed address.
func network() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	up := func(name string) error {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("%s flags: %w", name, err)
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
	}
	set := func(name string, req uint, ip net.IP) error {
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(ip.To4()); err != nil {
			return err
		}
		return unix.IoctlIfreq(fd, req, ifr)
	}
	if err := up("lo"); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat("/sys/class/net/eth0"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("eth0 did not appear within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := set("eth0", unix.SIOCSIFADDR, net.IPv4(10, 0, 2, 15)); err != nil {
		return fmt.Errorf("eth0 address: %w", err)
	}
	if err := set("eth0", unix.SIOCSIFNETMASK, net.IPv4(255, 255, 255, 0)); err != nil {
		return fmt.Errorf("eth0 netmask: %w", err)
	}
	return up("eth0")
}

// serveControl answers the rig: "stats" prints the spool's figures from the
// daemon's admin socket as one JSON line, "dead <destination>" that
// destination's dead letters (identifiers and reasons), "trace <time>" a
// page of message traces from that receive time on, as `hl7edge trace
// --json` prints them; "halt" stops hl7edge with SIGTERM, unmounts the disk
// and powers off (a clean shutdown, for the final check).
func serveControl(hl7edge *exec.Cmd, exited <-chan struct{}) {
	ln, err := net.Listen("tcp", controlTCP)
	if err != nil {
		say("FAILED control port: %v", err)
		return
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		line, _ := bufio.NewReader(c).ReadString('\n')
		cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch cmd {
		case "stats":
			fmt.Fprintln(c, statsLine(socketPath))
			c.Close()
		case "dead":
			args, _ := json.Marshal(map[string]string{"name": arg})
			fmt.Fprintln(c, adminLine(socketPath, command.Request{ID: "rig", Name: command.DeadList, Args: args}))
			c.Close()
		case "trace":
			fmt.Fprintln(c, traceLine("/hl7edge", arg))
			c.Close()
		case "halt":
			_ = hl7edge.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				say("hl7edge did not stop within 60s of SIGTERM")
			}
			unix.Sync()
			if err := unix.Unmount(dataDir, 0); err != nil {
				say("FAILED unmount: %v", err)
			} else {
				say("unmounted")
			}
			fmt.Fprintln(c, "halted")
			c.Close()
			halt()
		default:
			c.Close()
		}
	}
}

// statsLine is the daemon's spool figures as one JSON line, or an object
// with an "error" key when the admin socket does not answer.
func statsLine(socket string) string {
	return adminLine(socket, command.Request{ID: "rig", Name: command.SpoolStats})
}

// adminLine is the answer's data to req as one JSON line, or an object with
// an "error" key when the admin socket does not answer or the command fails.
func adminLine(socket string, req command.Request) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := admin.Call(ctx, socket, req)
	if err != nil {
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		return string(b)
	}
	if r.Status != command.Successful {
		b, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("%s %s: %s", req.Name, r.Status, r.Detail)})
		return string(b)
	}
	b, err := json.Marshal(r.Data)
	if err != nil {
		return fmt.Sprintf("{\"error\":%q}", err.Error())
	}
	return string(b)
}

// traceLine runs the real command line, `hl7edge trace --json`, for up to
// 1,000 messages received from since on: the rig reads traces as the
// person at the box does. Its answer is one JSON line, or an object with
// an "error" key.
func traceLine(bin, since string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "trace", "--config", configPath, "--json", "--limit", "1000", "--since", since)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b, _ := json.Marshal(map[string]string{"error": fmt.Sprintf("hl7edge trace: %v: %s", err, strings.TrimSpace(stderr.String()))})
		return string(b)
	}
	return strings.TrimSpace(string(out))
}

func halt() {
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
