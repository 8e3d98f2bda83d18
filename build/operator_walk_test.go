package build

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/freeport"
)

// TestOperatorWalk runs build/operator-walk: one gateway on loopback set up
// as an integration engineer would and operated through a day (client
// certificates, an upstream outage, a refused message held and skipped, a
// configuration rolled back, an undeliverable message re-routed, the fleet
// table), each step checked by the script (issue 28, "Must show").
func TestOperatorWalk(t *testing.T) {
	for _, tool := range []string{"bash", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed; the operator walk needs it", tool)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hl7edge")
	build := exec.Command("go", "build", "-o", bin, "./cmd/hl7edge")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hl7edge: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	walk := exec.CommandContext(ctx, "./operator-walk", bin, filepath.Join(dir, "walk"))
	walk.Env = os.Environ()
	// The script's servers bind these later: ports from build/freeport, not
	// port 0 closed again, which any other test binary's outgoing
	// connection may take meanwhile (see build/freeport).
	for _, name := range []string{"LAB_PORT", "ADT_PORT", "WS_PORT", "LIS_PORT", "MQTT_PORT"} {
		walk.Env = append(walk.Env, fmt.Sprintf("%s=%d", name, freeport.Take(t)))
	}
	out, err := walk.CombinedOutput()
	if err != nil {
		t.Fatalf("build/operator-walk: %v\n%s", err, out)
	}
	t.Logf("build/operator-walk:\n%s", out)
}
