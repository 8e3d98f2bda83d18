package appliance_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/board"
	"github.com/hl7edge/hl7edge/device/appliance"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/pipeline/logtest"
)

// The reason the daemon stops is a record in the configured log format, not
// a bare line beside the structured ones, so a journal query by level or key
// finds it (found on the arm64 system rig: the EACCES on /dev/gpiochip was
// the only unstructured line of the unit's journal).
func TestRunLogsWhyItStopsAsARecord(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "hl7edge.yaml")
	yaml := strings.NewReplacer("DIR", dir).Replace(`device:
  board: rpi
spool:
  dir: DIR/spool
admin:
  socket: DIR/admin.sock
log:
  format: json
sources:
  - name: in
    type: mllp
    listen: 127.0.0.1:0
destinations:
  - name: a
    type: file
    dir: DIR/out
`)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out logtest.Buffer
	boardErr := errors.New("board rpi: open /dev/gpiochip0: permission denied")
	err := appliance.Run(context.Background(), appliance.Options{
		ConfigPath: cfgPath, LogOut: &out,
		Board: func(*config.Config, *slog.Logger) (board.Board, error) { return nil, boardErr },
	})
	var le *appliance.LoggedError
	if !errors.As(err, &le) || !errors.Is(err, boardErr) {
		t.Fatalf("Run returned %v (%T), want a LoggedError wrapping the board's error", err, err)
	}
	var found bool
	for line := range strings.Lines(out.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a line of the log is not a JSON record: %q", line)
		}
		if rec["level"] == "ERROR" && rec["msg"] == "hl7edge cannot run" && strings.Contains(rec["err"].(string), "permission denied") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no ERROR record saying why Run stopped in %q", out.String())
	}
}
