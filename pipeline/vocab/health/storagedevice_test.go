package health

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// Without a probe the snapshot says nothing about the card; with one, an
// unknown card says "unknown" and leaves the byte counts out rather than
// publishing zeros a dashboard would read as "nothing written".
func TestSnapshotCarriesStorageDevice(t *testing.T) {
	r := NewRegistry("gw", "1", nil)
	b, err := json.Marshal(r.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "storage_device") {
		t.Fatalf("snapshot without a storage probe has storage_device: %s", b)
	}
	r.SetStorageProbe(func() StorageDevice {
		return StorageDevice{BlockDevice: "mmcblk0p2", Disk: "mmcblk0", PreEOL: "unknown", LifeUsedA: "unknown", LifeUsedB: "unknown"}
	})
	s := r.Snapshot()
	if s.StorageDevice == nil || s.StorageDevice.Disk != "mmcblk0" {
		t.Fatalf("storage device = %+v", s.StorageDevice)
	}
	b, err = json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	want := `"storage_device":{"block_device":"mmcblk0p2","disk":"mmcblk0","pre_eol":"unknown","life_used_a":"unknown","life_used_b":"unknown"}`
	if !strings.Contains(string(b), want) {
		t.Fatalf("snapshot JSON %s\nlacks %s", b, want)
	}
}

// The samples of storage_device in docs/mqtt-api.md are what the code
// publishes: each decodes with no unknown field and encodes back the same.
func TestStorageDeviceSamplesInTheDocs(t *testing.T) {
	b, err := os.ReadFile("../../../docs/mqtt-api.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		sample, ok := strings.CutPrefix(strings.TrimSpace(line), `"storage_device":`)
		if !ok {
			continue
		}
		n++
		dec := json.NewDecoder(strings.NewReader(sample))
		dec.DisallowUnknownFields()
		var sd StorageDevice
		if err := dec.Decode(&sd); err != nil {
			t.Fatalf("sample %s: %v", sample, err)
		}
		again, err := json.Marshal(sd)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != sample {
			t.Errorf("sample %s\nencodes back as %s", sample, again)
		}
	}
	if n < 2 {
		t.Fatalf("found %d storage_device samples in docs/mqtt-api.md, want the eMMC and the SD card", n)
	}
}
