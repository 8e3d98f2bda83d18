// Package blockdevtest builds a fake sysfs tree shaped like the kernel's,
// symlinks included, so that tests run the real blockdev reader against
// eMMC, SD, NVMe, device-mapper and loop devices this machine does not have.
package blockdevtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/board/blockdev"
)

// Tree is a fake /sys. Devices are added with Disk, Partition and Mapper;
// Dir makes a directory the Finder sees as held by a device.
type Tree struct {
	t    testing.TB
	Root string
	dirs map[string]string    // sysfs dir by device name
	nums map[string][2]uint32 // major:minor by device name
	devs map[string][2]uint32 // major:minor by path, what DevOf answers
}

// New makes an empty tree in a temporary directory.
func New(t testing.TB) *Tree {
	t.Helper()
	return &Tree{t: t, Root: t.TempDir(), dirs: map[string]string{}, nums: map[string][2]uint32{}, devs: map[string][2]uint32{}}
}

// Finder reads this tree, mapping the directories made by Dir to their
// devices (any other path is an error, as an unmounted one would be).
func (tr *Tree) Finder() blockdev.Finder {
	return blockdev.Finder{Root: tr.Root, DevOf: func(path string) (uint32, uint32, error) {
		d, ok := tr.devs[path]
		if !ok {
			return 0, 0, fmt.Errorf("stat %s: no such file or directory", path)
		}
		return d[0], d[1], nil
	}}
}

// Disk adds a whole disk the way the kernel lays it out: its directory
// under devices/<bus>/<host>/block/<name>, a device link to the bus device
// (where an eMMC's life_time and pre_eol_info live), /sys/block/<name> and
// /sys/dev/block/MAJ:MIN links to it. bus is "mmc", "nvme", "virtio"...
func (tr *Tree) Disk(bus, name string, major, minor uint32) {
	tr.t.Helper()
	host := filepath.Join(tr.Root, "devices", "platform", bus+"_host", bus+"0:0001")
	dir := filepath.Join(host, "block", name)
	tr.mkdir(dir)
	tr.link(filepath.Join(dir, "device"), "../..")
	tr.add(name, dir, major, minor)
	tr.link(filepath.Join(tr.Root, "block", name), rel(filepath.Join(tr.Root, "block"), dir))
}

// Partition adds a partition inside disk, with its "partition" file.
func (tr *Tree) Partition(disk, name string, major, minor uint32, number int) {
	tr.t.Helper()
	dir := filepath.Join(tr.dirs[disk], name)
	tr.mkdir(dir)
	tr.add(name, dir, major, minor)
	tr.Write(name, "partition", fmt.Sprint(number))
}

// Virtual adds a virtual block device (dm-0, loop0) under devices/virtual.
func (tr *Tree) Virtual(name string, major, minor uint32) {
	tr.t.Helper()
	dir := filepath.Join(tr.Root, "devices", "virtual", "block", name)
	tr.mkdir(dir)
	tr.add(name, dir, major, minor)
}

// Slave records that device-mapper device dm sits on under.
func (tr *Tree) Slave(dm, under string) {
	tr.t.Helper()
	tr.mkdir(filepath.Join(tr.dirs[dm], "slaves"))
	tr.link(filepath.Join(tr.dirs[dm], "slaves", under), rel(filepath.Join(tr.dirs[dm], "slaves"), tr.dirs[under]))
}

// Dir makes a directory that the Finder sees on device name (as stat(2)
// would report for a file system mounted from it) and returns its path.
// name "" puts it on a file system without a device (major 0).
func (tr *Tree) Dir(name string) string {
	tr.t.Helper()
	dir := tr.t.TempDir()
	tr.devs[dir] = tr.nums[name] // zero, major 0, for ""
	return dir
}

// Loop records that loop device loop is backed by a file on device on.
func (tr *Tree) Loop(loop, on string) {
	tr.t.Helper()
	file := filepath.Join(tr.Dir(on), "disk.img")
	tr.devs[file] = tr.nums[on]
	tr.Write(loop, "loop/backing_file", file)
}

// Write sets a file of a device's sysfs directory ("stat",
// "device/life_time"), following its symlinks as sysfs does.
func (tr *Tree) Write(name, file, content string) {
	tr.t.Helper()
	p := filepath.Join(tr.dirs[name], file)
	tr.mkdir(filepath.Dir(p))
	if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

// Remove deletes a file of a device's sysfs directory.
func (tr *Tree) Remove(name, file string) {
	tr.t.Helper()
	if err := os.Remove(filepath.Join(tr.dirs[name], file)); err != nil {
		tr.t.Fatal(err)
	}
}

// Stat writes a device's stat file with sectors written in field 7, the
// other 16 fields plausible, as a 5.5+ kernel prints it.
func (tr *Tree) Stat(name string, sectorsWritten uint64) {
	tr.t.Helper()
	f := []string{"4096", "12", "81920", "340", "2048", "30", fmt.Sprint(sectorsWritten), "5100", "0", "4200", "5440", "0", "0", "0", "0", "120", "80"}
	tr.Write(name, "stat", "    "+strings.Join(f, " "))
}

// EMMC writes an eMMC's wear attributes: life_time "0x0A 0x0B" style and
// pre_eol_info "0x01" style.
func (tr *Tree) EMMC(disk string, lifeA, lifeB, preEOL uint8) {
	tr.t.Helper()
	tr.Write(disk, "device/life_time", fmt.Sprintf("0x%02x 0x%02x", lifeA, lifeB))
	tr.Write(disk, "device/pre_eol_info", fmt.Sprintf("0x%02x", preEOL))
}

func (tr *Tree) add(name, dir string, major, minor uint32) {
	tr.dirs[name] = dir
	tr.nums[name] = [2]uint32{major, minor}
	links := filepath.Join(tr.Root, "dev", "block")
	tr.link(filepath.Join(links, fmt.Sprintf("%d:%d", major, minor)), rel(links, dir))
}

func (tr *Tree) mkdir(dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tr.t.Fatal(err)
	}
}

// link makes a relative symlink, as sysfs's are.
func (tr *Tree) link(name, target string) {
	tr.mkdir(filepath.Dir(name))
	if err := os.Symlink(target, name); err != nil {
		tr.t.Fatal(err)
	}
}

func rel(from, to string) string {
	r, err := filepath.Rel(from, to)
	if err != nil {
		panic(err)
	}
	return r
}
