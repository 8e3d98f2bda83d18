package blockdev_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hl7edge/hl7edge/board/blockdev"
	"github.com/hl7edge/hl7edge/board/blockdev/blockdevtest"
)

// emmc is a Pi CM4's eMMC: the spool on its second partition.
func emmc(t *testing.T, lifeA, lifeB, preEOL uint8) (*blockdevtest.Tree, string) {
	tr := blockdevtest.New(t)
	tr.Disk("mmc", "mmcblk0", 179, 0)
	tr.Stat("mmcblk0", 900000)
	tr.Partition("mmcblk0", "mmcblk0p2", 179, 2, 2)
	tr.Stat("mmcblk0p2", 123456)
	tr.EMMC("mmcblk0", lifeA, lifeB, preEOL)
	return tr, tr.Dir("mmcblk0p2")
}

func read(t *testing.T, tr *blockdevtest.Tree, dir string) blockdev.Reading {
	t.Helper()
	r, err := tr.Finder().Read(dir)
	if err != nil {
		t.Fatalf("Read(%s): %v", dir, err)
	}
	return r
}

// The partition's stat counts the spool's file system; the wear is read
// from the parent disk, where the MMC driver puts it.
func TestEMMCPartitionReadsParentWearAndOwnStat(t *testing.T) {
	for _, c := range []struct {
		name               string
		a, b, eol          uint8
		wantA, wantB, want string
	}{
		{"normal", 0x01, 0x02, 0x01, "0-10%", "10-20%", "normal"},
		{"warning", 0x08, 0x09, 0x02, "70-80%", "80-90%", "warning"},
		{"urgent", 0x0A, 0x0B, 0x03, "90-100%", "exceeded", "urgent"},
		{"eMMC 4.5: not defined", 0x00, 0x00, 0x00, "unknown", "unknown", "unknown"},
		{"reserved values", 0x0C, 0xFF, 0x04, "unknown", "unknown", "unknown"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, dir := emmc(t, c.a, c.b, c.eol)
			r := read(t, tr, dir)
			if r.Device != "mmcblk0p2" || r.Disk != "mmcblk0" {
				t.Fatalf("device %q disk %q, want mmcblk0p2 on mmcblk0", r.Device, r.Disk)
			}
			if !r.WrittenKnown || r.SectorsWritten != 123456 {
				t.Fatalf("sectors written %d (known %v), want the partition's 123456, not the disk's 900000", r.SectorsWritten, r.WrittenKnown)
			}
			if r.LifeA.String() != c.wantA || r.LifeB.String() != c.wantB || r.PreEOL.String() != c.want {
				t.Fatalf("life %s/%s pre-EOL %s, want %s/%s %s", r.LifeA, r.LifeB, r.PreEOL, c.wantA, c.wantB, c.want)
			}
		})
	}
}

// An SD card (and NVMe, virtio) has no life_time or pre_eol_info: unknown,
// never normal.
func TestCardsWithoutWearAreUnknown(t *testing.T) {
	for _, c := range []struct{ bus, disk, part string }{
		{"mmc", "mmcblk0", "mmcblk0p2"}, // an SD card on the same driver
		{"nvme", "nvme0n1", "nvme0n1p1"},
		{"virtio", "vda", "vda1"},
	} {
		t.Run(c.disk, func(t *testing.T) {
			tr := blockdevtest.New(t)
			tr.Disk(c.bus, c.disk, 259, 0)
			tr.Partition(c.disk, c.part, 259, 1, 1)
			tr.Stat(c.part, 42)
			r := read(t, tr, tr.Dir(c.part))
			if r.Device != c.part || r.Disk != c.disk {
				t.Fatalf("device %q disk %q, want %s on %s", r.Device, r.Disk, c.part, c.disk)
			}
			if r.PreEOL != blockdev.PreEOLUnknown || r.LifeA != 0 || r.LifeB != 0 {
				t.Fatalf("wear %s/%s pre-EOL %s on a device that reports none", r.LifeA, r.LifeB, r.PreEOL)
			}
			if r.PreEOL.String() != "unknown" || r.LifeA.String() != "unknown" {
				t.Fatalf("absent wear reads %q/%q, want unknown", r.PreEOL, r.LifeA)
			}
			if !r.WrittenKnown || r.SectorsWritten != 42 {
				t.Fatalf("sectors written %d (known %v), want 42", r.SectorsWritten, r.WrittenKnown)
			}
		})
	}
}

// A file system on a whole disk (no partition table) reads the disk itself.
func TestWholeDisk(t *testing.T) {
	tr := blockdevtest.New(t)
	tr.Disk("mmc", "mmcblk1", 179, 8)
	tr.Stat("mmcblk1", 7)
	tr.EMMC("mmcblk1", 0x03, 0x01, 0x02)
	r := read(t, tr, tr.Dir("mmcblk1"))
	if r.Device != "mmcblk1" || r.Disk != "mmcblk1" || r.PreEOL != blockdev.PreEOLWarning || r.SectorsWritten != 7 {
		t.Fatalf("got %+v", r)
	}
}

// A missing or short stat leaves the written figure unknown, not zero; the
// wear is still read.
func TestMissingStatIsUnknown(t *testing.T) {
	tr, dir := emmc(t, 0x02, 0x02, 0x01)
	tr.Remove("mmcblk0p2", "stat")
	r := read(t, tr, dir)
	if r.WrittenKnown {
		t.Fatalf("written known (%d) without a stat file", r.SectorsWritten)
	}
	if r.PreEOL != blockdev.PreEOLNormal {
		t.Fatalf("pre-EOL %s, want normal read despite the missing stat", r.PreEOL)
	}
	tr.Write("mmcblk0p2", "stat", "1 2 3 4 5 6") // an old kernel's short line
	if r := read(t, tr, dir); r.WrittenKnown {
		t.Fatalf("written known (%d) from a six-field stat", r.SectorsWritten)
	}
}

// Some kernel trees print pre_eol_info as "02", without the 0x.
func TestPreEOLWithoutHexPrefix(t *testing.T) {
	tr, dir := emmc(t, 0x01, 0x01, 0x01)
	tr.Write("mmcblk0", "device/pre_eol_info", "02")
	if r := read(t, tr, dir); r.PreEOL != blockdev.PreEOLWarning {
		t.Fatalf("pre_eol_info \"02\" read as %s, want warning", r.PreEOL)
	}
}

// dm-crypt (or LVM) over an eMMC partition: the dm device's stat, the
// eMMC's wear. Over two disks there is no one card to judge.
func TestDeviceMapperFollowsItsSlave(t *testing.T) {
	tr, _ := emmc(t, 0x04, 0x04, 0x02)
	tr.Virtual("dm-0", 254, 0)
	tr.Stat("dm-0", 555)
	tr.Slave("dm-0", "mmcblk0p2")
	r := read(t, tr, tr.Dir("dm-0"))
	if r.Device != "dm-0" || r.Disk != "mmcblk0" || r.SectorsWritten != 555 || r.PreEOL != blockdev.PreEOLWarning {
		t.Fatalf("got %+v, want dm-0's 555 sectors and mmcblk0's warning", r)
	}

	tr.Disk("nvme", "nvme0n1", 259, 0)
	tr.Slave("dm-0", "nvme0n1")
	r = read(t, tr, tr.Dir("dm-0"))
	if r.Disk != "" || r.PreEOL != blockdev.PreEOLUnknown {
		t.Fatalf("dm over two disks judged as %q %s, want no disk and unknown", r.Disk, r.PreEOL)
	}
}

// A loop device's wear is that of the disk holding its backing file.
func TestLoopFollowsItsBackingFile(t *testing.T) {
	tr, _ := emmc(t, 0x01, 0x01, 0x03)
	tr.Virtual("loop0", 7, 0)
	tr.Stat("loop0", 99)
	tr.Loop("loop0", "mmcblk0p2")
	r := read(t, tr, tr.Dir("loop0"))
	if r.Device != "loop0" || r.Disk != "mmcblk0" || r.SectorsWritten != 99 || r.PreEOL != blockdev.PreEOLUrgent {
		t.Fatalf("got %+v, want loop0's 99 sectors and mmcblk0's urgent", r)
	}
}

// tmpfs, overlay: no device at all, which the caller reports as unknown.
func TestNoBlockDevice(t *testing.T) {
	tr := blockdevtest.New(t)
	_, err := tr.Finder().Read(tr.Dir(""))
	if !errors.Is(err, blockdev.ErrNoBlockDevice) {
		t.Fatalf("err = %v, want ErrNoBlockDevice", err)
	}
	tr.Disk("mmc", "mmcblk0", 179, 0)
	dir := tr.Dir("mmcblk0")
	if err := os.Remove(filepath.Join(tr.Root, "dev", "block", "179:0")); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Finder().Read(dir); err == nil {
		t.Fatal("a device missing from /sys/dev/block was read")
	}
}

// The real stat(2) path: whatever this machine's test directory sits on,
// the answer is a device or ErrNoBlockDevice, never a wrong guess.
func TestRealStat(t *testing.T) {
	_, err := blockdev.Finder{Root: t.TempDir()}.Read(t.TempDir())
	if err == nil {
		t.Fatal("read a device from an empty sysfs")
	}
}
