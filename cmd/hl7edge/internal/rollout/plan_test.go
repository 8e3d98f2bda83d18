package rollout

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/cmd/hl7edge/internal/fleetview"
	"github.com/hl7edge/hl7edge/device/firmware"
)

// TestWavesAndThreshold: --waves are cumulative counts or shares (rounded
// up, each wave at least one box, the last reaching all); --max-failures
// rounds a share down; mistakes name the flag and the form to use.
func TestWavesAndThreshold(t *testing.T) {
	for _, tc := range []struct {
		spec string
		n    int
		want []int
	}{
		{"1,5%,25%,100%", 1000, []int{1, 50, 250, 1000}},
		{"1,5%,25%,100%", 7, []int{1, 2, 3, 7}},
		{"1,5%,25%,100%", 1, []int{1}},
		{"10,100%", 3, []int{3}},
		{"100%", 0, nil},
	} {
		got, err := WaveEnds(tc.spec, tc.n)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("WaveEnds(%q, %d) = %v, %v; want %v", tc.spec, tc.n, got, err, tc.want)
		}
	}
	for _, bad := range []string{"1,50%", "x,100%", "1,-5%,100%", "1,,100%", "150%"} {
		if _, err := WaveEnds(bad, 100); err == nil || !strings.Contains(err.Error(), "--waves") {
			t.Errorf("WaveEnds(%q) = %v; want an error naming --waves", bad, err)
		}
	}
	for spec, want := range map[string]int{"2%": 20, "0.5%": 5, "0": 0, "3": 3, "0.09%": 0} {
		if got, err := MaxFailures(spec, 1000); err != nil || got != want {
			t.Errorf("MaxFailures(%q, 1000) = %d, %v; want %d", spec, got, err, want)
		}
	}
}

// TestPlanOrder: canary boxes lead, offline boxes are skipped and boxes on
// the version done, none of them in a wave.
func TestPlanOrder(t *testing.T) {
	var rows []fleetview.Row
	for i := range 10 {
		r := fleetview.Row{ID: fmt.Sprintf("gw%d", i), Online: i != 3, Version: "1.0"}
		if i == 4 {
			r.Version = "2.0"
		}
		if i == 7 || i == 8 {
			r.Labels = map[string]string{"ring": "canary"}
		}
		rows = append(rows, r)
	}
	st, err := Plan(rows, firmware.Args{Version: "2.0"}, "all", "2,50%,100%", "1")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range st.Boxes {
		got = append(got, fmt.Sprintf("%s:%d:%s", b.ID, b.Wave, b.Status))
	}
	want := "gw7:1:pending gw8:1:pending gw0:2:pending gw1:2:pending gw2:3:pending gw5:3:pending gw6:3:pending gw9:3:pending gw3:0:skipped gw4:0:done"
	if strings.Join(got, " ") != want {
		t.Errorf("plan\n %s\nwant\n %s", strings.Join(got, " "), want)
	}
	if st.Waves != 3 || st.MaxFailures != 1 {
		t.Errorf("%d waves, max %d failures; want 3 and 1", st.Waves, st.MaxFailures)
	}
}
