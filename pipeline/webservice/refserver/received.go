package refserver

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/webservice/wire"
)

// ReceivedLog is the name of the append-only post log in StoreDir. Each
// line is tab-separated: time (RFC 3339, UTC), GUID, control ID (MSH-10),
// and "yes" when the GUID had been stored before.
const ReceivedLog = "received.log"

// Received is one line of received.log.
type Received struct {
	Time      time.Time
	GUID      string
	ControlID string
	Duplicate bool
}

// ReadReceived reads received.log from a store directory, in order.
func ReadReceived(storeDir string) ([]Received, error) {
	path := filepath.Join(storeDir, ReceivedLog)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseReceived(f, path)
}

func parseReceived(r io.Reader, name string) ([]Received, error) {
	var out []Received
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		parts := strings.Split(sc.Text(), "\t")
		if len(parts) != 4 {
			return out, fmt.Errorf("%s line %d: %d tab-separated fields, want 4", name, line, len(parts))
		}
		t, err := time.Parse(time.RFC3339Nano, parts[0])
		if err != nil {
			return out, fmt.Errorf("%s line %d: %w", name, line, err)
		}
		if parts[3] != "yes" && parts[3] != "no" {
			return out, fmt.Errorf("%s line %d: duplicate field %q, want yes or no", name, line, parts[3])
		}
		out = append(out, Received{Time: t, GUID: parts[1], ControlID: parts[2], Duplicate: parts[3] == "yes"})
	}
	return out, sc.Err()
}

// formatReceived is one line of received.log.
func formatReceived(r Received) string {
	return fmt.Sprintf("%s\t%s\t%s\t%s\n", r.Time.UTC().Format(time.RFC3339Nano), r.GUID, wire.Clean(r.ControlID, 64), yesNo(r.Duplicate))
}
