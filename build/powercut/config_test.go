package powercut

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/device/config"
)

// The guest's configuration is one the product accepts, so a routing or
// key mistake in the rig shows here and not as a VM that never answers.
func TestGuestConfigIsValid(t *testing.T) {
	yaml := string(fmt.Appendf(nil, guestConfig, 8081, 8082, spoolExtra(), 2577, 2578))
	// The guest's password file is its own configuration file, at a path
	// this machine does not have.
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("powercut\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml = strings.ReplaceAll(yaml, "password_file: /etc/hl7edge.yaml", "password_file: "+pw)
	if _, err := config.Parse([]byte(yaml)); err != nil {
		t.Fatalf("the product refuses the guest's configuration: %v\n%s", err, yaml)
	}
	if !strings.Contains(yaml, "value_log_cleanup: 2s") {
		t.Error("the guest's spool does not clean its value log during the cuts (value_log_cleanup)")
	}
}
