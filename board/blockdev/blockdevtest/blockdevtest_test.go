package blockdevtest

import (
	"os"
	"path/filepath"
	"testing"
)

// The tree must be the kernel's shape, or tests against it prove nothing:
// /sys/block/<disk>/device/life_time and the same file reached through
// /sys/dev/block/MAJ:MIN are one file, and a partition sits in its disk.
func TestTreeHasTheKernelsShape(t *testing.T) {
	tr := New(t)
	tr.Disk("mmc", "mmcblk0", 179, 0)
	tr.Partition("mmcblk0", "mmcblk0p2", 179, 2, 2)
	tr.EMMC("mmcblk0", 1, 2, 1)
	a, err := os.ReadFile(filepath.Join(tr.Root, "block", "mmcblk0", "device", "life_time"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(tr.Root, "dev", "block", "179:0", "device", "life_time"))
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != "0x01 0x02\n" || string(b) != string(a) {
		t.Fatalf("life_time %q via /sys/block, %q via /sys/dev/block", a, b)
	}
	part, err := filepath.EvalSymlinks(filepath.Join(tr.Root, "dev", "block", "179:2"))
	if err != nil {
		t.Fatal(err)
	}
	disk, err := filepath.EvalSymlinks(filepath.Join(tr.Root, "block", "mmcblk0"))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(part) != disk {
		t.Fatalf("partition at %s, not inside its disk %s", part, disk)
	}
	if _, err := os.Stat(filepath.Join(part, "partition")); err != nil {
		t.Fatalf("partition file: %v", err)
	}
	if d, _, err := tr.Finder().DevOf(tr.Dir("mmcblk0p2")); err != nil || d != 179 {
		t.Fatalf("DevOf = %d, %v; want 179", d, err)
	}
}
