package appliance_test

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/board/blockdev"
	"github.com/hl7edge/hl7edge/board/blockdev/blockdevtest"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/cardwatch"
	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
)

// onCard puts the spool, wherever the configuration says, on one device of
// a fake sysfs tree, and counts the reads.
type onCard struct {
	f     blockdev.Finder
	dir   string
	reads atomic.Int64
}

func (c *onCard) Read(string) (blockdev.Reading, error) {
	c.reads.Add(1)
	return c.f.Read(c.dir)
}

// TestStorageWearingOverMQTT: a box whose eMMC reports pre-EOL warning
// publishes storage_wearing and the card in its health; a restart does not
// raise it again (the watch outlives the box, like the alarms), and the card
// reaching urgent raises it once more with the urgent text.
func TestStorageWearingOverMQTT(t *testing.T) {
	t.Parallel()
	tr := blockdevtest.New(t)
	tr.Disk("mmc", "mmcblk0", 179, 0)
	tr.Partition("mmcblk0", "mmcblk0p2", 179, 2, 2)
	tr.Stat("mmcblk0p2", 2048)
	tr.EMMC("mmcblk0", 0x09, 0x08, 0x02)
	card := &onCard{f: tr.Finder(), dir: tr.Dir("mmcblk0p2")}

	r := newRig(t, "gw-card")
	r.writeConfig(r.yaml(r.mllpPort, ""))
	op := r.operator(t)
	rn := r.start(appliance.Options{BlockDevices: card, CardEvery: 50 * time.Millisecond})
	a := op.waitAlarm(t, 0, cardwatch.AlarmStorageWearing)
	if d := fmt.Sprint(a["detail"]); !strings.Contains(d, "pre-EOL warning") || !strings.Contains(d, "order a replacement card") {
		t.Fatalf("warning alarm detail %q", d)
	}
	s := op.health(t)
	if sd := s.StorageDevice; sd == nil || sd.PreEOL != "warning" || sd.Disk != "mmcblk0" || sd.BlockDevice != "mmcblk0p2" ||
		sd.BytesWritten == nil || *sd.BytesWritten != 2048*512 {
		t.Fatalf("health storage_device = %+v", sd)
	}

	from := op.Log.Mark()
	op.must(t, command.Restart, nil, signed())
	rn.waitStarts(t, 2)
	n := card.reads.Load()
	waitUntil(t, waitLimit, "the new box to read the card", func() bool { return card.reads.Load() >= n+2 })
	tr.EMMC("mmcblk0", 0x0A, 0x0A, 0x03)
	a = op.waitAlarm(t, from, cardwatch.AlarmStorageWearing)
	if d := fmt.Sprint(a["detail"]); !strings.Contains(d, "pre-EOL URGENT") || !strings.Contains(d, "replace the card now") {
		t.Fatalf("alarm after the restart: %q, want the urgent one (warning must not be raised again)", d)
	}
	if got := op.alarms(from); len(slices.DeleteFunc(slices.Clone(got), func(k string) bool { return k != cardwatch.AlarmStorageWearing })) != 1 {
		t.Fatalf("alarms since the restart %q: storage_wearing more than once", got)
	}
	s = op.health(t)
	i := slices.IndexFunc(s.Alarms, func(x health.Alarm) bool { return x.Kind == cardwatch.AlarmStorageWearing })
	if i < 0 || s.Alarms[i].Count != 2 || !strings.Contains(s.Alarms[i].Detail, "URGENT") || s.StorageDevice.PreEOL != "urgent" {
		t.Fatalf("active alarms %+v, card %+v; want storage_wearing raised twice, urgent", s.Alarms, s.StorageDevice)
	}
}
