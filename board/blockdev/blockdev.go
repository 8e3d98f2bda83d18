// Package blockdev reads what the kernel tells about the block device that
// holds a directory: its name, how many bytes were written to it since it
// appeared (boot, for the card the system runs from) and, for an eMMC, the
// card's own wear estimates. It only reads sysfs; the appliance decides what
// the figures mean.
//
// The path from a directory to its figures:
//
//   - stat(2) of the directory gives st_dev, major:minor of the block device
//     its file system sits on (major 0 means none: tmpfs, overlay, btrfs, NFS);
//   - /sys/dev/block/MAJ:MIN links to the device's sysfs directory; its stat
//     file's 7th field counts 512-byte sectors written, whatever the device's
//     own sector size (the kernel's Documentation/block/stat.rst and
//     Documentation/ABI/stable/sysfs-block). A partition has its own stat,
//     which counts only what its file system wrote; that is the one read;
//   - the wear lives with the whole disk, not the partition: a partition's
//     sysfs directory (the one holding a "partition" file) sits inside its
//     disk's, so the parent directory is the disk whatever the naming
//     (mmcblk0p2, nvme0n1p1, sda1, vda1). A device-mapper device (dm-N,
//     LUKS, LVM) is followed through its single entry in slaves/, a loop
//     device through the file system of its loop/backing_file;
//   - <disk>/device/life_time ("0x01 0x02": DEVICE_LIFE_TIME_EST_TYP_A and
//     _B of the JEDEC eMMC 5.0 EXT_CSD, bytes 268 and 269) and
//     <disk>/device/pre_eol_info (PRE_EOL_INFO, byte 267) are attributes of
//     the MMC driver, defined in the kernel's drivers/mmc/core/mmc.c beside
//     the ones its Documentation/driver-api/mmc/mmc-dev-attrs.rst describes
//     (cid, date, name...); the driver fills them for EXT_CSD revision 7 and
//     later, eMMC 5.0, and leaves 0x00, "not defined", on older parts. Some
//     kernel trees print pre_eol_info without its 0x ("01"). SD cards,
//     USB sticks, NVMe and virtual disks have neither: their wear is unknown,
//     never healthy. The kernel reads EXT_CSD when it initialises the card,
//     so a change shows after the next boot.
package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where Linux mounts sysfs.
const DefaultRoot = "/sys"

// SectorBytes is the size of the sectors the stat file counts.
const SectorBytes = 512

// Life is an EXT_CSD device life time estimate: 1 is 0-10% of the rated
// life used, ... 10 is 90-100%, 11 is past it. 0 is unknown (not reported,
// "not defined" or a reserved value).
type Life uint8

// LifeExceeded is the estimate of a device past its rated life.
const LifeExceeded Life = 0x0B

// String is the estimate as people read it: "10-20%", "exceeded", "unknown".
func (l Life) String() string {
	switch {
	case l == 0 || l > LifeExceeded:
		return "unknown"
	case l == LifeExceeded:
		return "exceeded"
	}
	return fmt.Sprintf("%d-%d%%", (l-1)*10, l*10)
}

// PreEOL is the EXT_CSD pre-end-of-life information: how much of the
// device's reserved blocks (spares for worn-out ones) are consumed.
type PreEOL uint8

// Pre-EOL values. 0 is unknown (not reported or "not defined").
const (
	PreEOLUnknown PreEOL = 0
	PreEOLNormal  PreEOL = 1 // reserved blocks in normal use
	PreEOLWarning PreEOL = 2 // 80% of the reserved blocks consumed
	PreEOLUrgent  PreEOL = 3 // 90% consumed (JEDEC: "urgent")
)

// String is "normal", "warning", "urgent" or "unknown".
func (p PreEOL) String() string {
	switch p {
	case PreEOLNormal:
		return "normal"
	case PreEOLWarning:
		return "warning"
	case PreEOLUrgent:
		return "urgent"
	}
	return "unknown"
}

// Reading is one look at the device holding a directory. Absent figures
// are zero values with their Known flag false, never guessed.
type Reading struct {
	// Device is the block device holding the directory: a partition
	// (mmcblk0p2), a whole disk, or dm-0/loop0. Its stat gives Written.
	Device string
	// Disk is the whole physical disk whose wear is read (mmcblk0); "" when
	// none was found (a device-mapper device over several disks).
	Disk string
	// SectorsWritten is field 7 of Device's stat; WrittenKnown says it was
	// read.
	SectorsWritten uint64
	WrittenKnown   bool
	// LifeA and LifeB are the type A and type B estimates (the two kinds of
	// memory an eMMC may hold, e.g. SLC and MLC); PreEOL the reserved
	// blocks' state.
	LifeA, LifeB Life
	PreEOL       PreEOL
}

// Finder locates the block device holding a directory in a sysfs tree.
type Finder struct {
	// Root is the sysfs mount; "" is DefaultRoot. Tests point it at a fake
	// tree.
	Root string
	// DevOf gives the major:minor of the device holding path; nil is
	// stat(2)'s st_dev. Tests map their paths to the fake tree's devices.
	DevOf func(path string) (major, minor uint32, err error)
}

// ErrNoBlockDevice is the answer for a directory whose file system has no
// block device (major 0: tmpfs, overlay, btrfs, NFS, FUSE).
var ErrNoBlockDevice = errors.New("the file system has no block device (tmpfs, overlay, btrfs or a network file system)")

// Read finds the device holding dir and reads its figures. An error means
// the device could not be found; a found device's absent files leave their
// figures unknown.
func (f Finder) Read(dir string) (Reading, error) {
	major, minor, err := f.devOf(dir)
	if err != nil {
		return Reading{}, err
	}
	sys, err := f.sysDir(major, minor)
	if err != nil {
		return Reading{}, err
	}
	r := Reading{Device: filepath.Base(sys)}
	r.SectorsWritten, r.WrittenKnown = readWritten(sys)
	if disk := f.disk(sys, 0); disk != "" {
		r.Disk = filepath.Base(disk)
		r.LifeA, r.LifeB = readLife(filepath.Join(disk, "device", "life_time"))
		r.PreEOL = readPreEOL(filepath.Join(disk, "device", "pre_eol_info"))
	}
	return r, nil
}

func (f Finder) root() string {
	if f.Root == "" {
		return DefaultRoot
	}
	return f.Root
}

func (f Finder) devOf(path string) (major, minor uint32, err error) {
	if f.DevOf != nil {
		major, minor, err = f.DevOf(path)
	} else {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			return 0, 0, fmt.Errorf("stat %s: %w", path, err)
		}
		major, minor = unix.Major(st.Dev), unix.Minor(st.Dev)
	}
	if err == nil && major == 0 {
		err = fmt.Errorf("%s (device %d:%d): %w", path, major, minor, ErrNoBlockDevice)
	}
	return major, minor, err
}

// sysDir resolves /sys/dev/block/MAJ:MIN to the device's own directory.
func (f Finder) sysDir(major, minor uint32) (string, error) {
	link := filepath.Join(f.root(), "dev", "block", fmt.Sprintf("%d:%d", major, minor))
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("block device %d:%d not in sysfs (%s): %w", major, minor, link, err)
	}
	return dir, nil
}

// maxHops bounds the stacking followed (dm over dm over loop...), so a
// loop device whose backing file lives on itself cannot spin.
const maxHops = 4

// disk walks from a device's sysfs directory to the physical disk under
// it; "" when there is none to be found.
func (f Finder) disk(sys string, hops int) string {
	if hops > maxHops {
		return ""
	}
	if exists(filepath.Join(sys, "partition")) {
		return f.disk(filepath.Dir(sys), hops+1)
	}
	if slaves, err := os.ReadDir(filepath.Join(sys, "slaves")); err == nil && len(slaves) > 0 {
		if len(slaves) > 1 {
			return "" // spread over several disks: no one card to judge
		}
		under, err := filepath.EvalSymlinks(filepath.Join(sys, "slaves", slaves[0].Name()))
		if err != nil {
			return ""
		}
		return f.disk(under, hops+1)
	}
	if b, err := os.ReadFile(filepath.Join(sys, "loop", "backing_file")); err == nil {
		major, minor, err := f.devOf(strings.TrimSpace(string(b)))
		if err != nil {
			return ""
		}
		under, err := f.sysDir(major, minor)
		if err != nil {
			return ""
		}
		return f.disk(under, hops+1)
	}
	return sys
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readWritten reads field 7 of a stat file: sectors written.
func readWritten(sys string) (uint64, bool) {
	b, err := os.ReadFile(filepath.Join(sys, "stat"))
	if err != nil {
		return 0, false
	}
	fields := strings.Fields(string(b))
	if len(fields) < 7 {
		return 0, false
	}
	n, err := strconv.ParseUint(fields[6], 10, 64)
	return n, err == nil
}

// readLife parses life_time, "0x01 0x02".
func readLife(path string) (a, b Life) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(raw))
	if len(f) != 2 {
		return 0, 0
	}
	return Life(hexByte(f[0], uint8(LifeExceeded))), Life(hexByte(f[1], uint8(LifeExceeded)))
}

func readPreEOL(path string) PreEOL {
	raw, err := os.ReadFile(path)
	if err != nil {
		return PreEOLUnknown
	}
	return PreEOL(hexByte(strings.TrimSpace(string(raw)), uint8(PreEOLUrgent)))
}

// hexByte parses "0x02"; anything else, or above limit (JEDEC's reserved
// values), is 0, unknown.
func hexByte(s string, limit uint8) uint8 {
	v, err := strconv.ParseUint(s, 0, 8)
	if err != nil || v > uint64(limit) {
		return 0
	}
	return uint8(v)
}
