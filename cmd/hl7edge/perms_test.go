package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// TestFilesArePrivateWhateverTheUmask: the daemon started with umask 022
// (the usual default outside systemd) still writes its spool, its file
// destination's messages and its session file readable by its own user
// only: files 0600, directories 0700. They hold patient data.
func TestFilesArePrivateWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0o022) // inherited by the daemon
	defer syscall.Umask(old)
	dir := t.TempDir()
	port := freePort(t)
	cfg := filepath.Join(dir, "hl7edge.yaml")
	text := fmt.Sprintf(`device: {id: perms-gw, board: sim}
spool: {dir: %[1]s/var/spool}
admin: {socket: %[1]s/admin.sock}
sources:
  - {name: in, type: mllp, listen: "127.0.0.1:%[2]d"}
destinations:
  - {name: archive, type: file, dir: %[1]s/var/out}
`, dir, port)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	d := startDaemon(t, cfg, filepath.Join(dir, "admin.sock"), addr)
	c, err := mllp.Dial(context.Background(), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := c.Send(context.Background(), []byte("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|CTL-PERM-1|P|2.5\rPID|1||12345\r"))
	c.Close()
	if err != nil || !strings.Contains(string(ack), "MSA|AA|") {
		t.Fatalf("ACK %q, err %v", ack, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(readArchive(t, filepath.Join(dir, "var", "out"))) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the message never reached the file destination:\n%s", d.tail(30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.stop()
	checked := 0
	err = filepath.WalkDir(filepath.Join(dir, "var"), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		checked++
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is mode %v under umask 022; want 0600 for files and 0700 for directories", strings.TrimPrefix(p, dir), info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 5 {
		t.Fatalf("only %d entries under %s: the test saw nothing", checked, dir)
	}
}

// TestConfigCheckWarnsAboutReadableSecrets: a password file every user
// can read passes `config check` (it is valid) but with a warning naming
// the file and the fix; a 0600 one draws none.
func TestConfigCheckWarnsAboutReadableSecrets(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "ehr.pass")
	if err := os.WriteFile(pass, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pass, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "hl7edge.yaml")
	text := fmt.Sprintf(`device: {id: secret-gw, board: sim}
spool: {dir: %[1]s/spool}
destinations:
  - {name: ehr, type: webservice, url: "https://ingest.example.org/ping", logon_id: gw, password_file: %[2]s}
`, dir, pass)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binPath, "config", "check", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), pass) || !strings.Contains(string(out), "readable") {
		t.Errorf("config check with a 0644 password file printed:\n%s\nwant a warning naming %s", out, pass)
	}
	if err := os.Chmod(pass, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(binPath, "config", "check", cfg).CombinedOutput()
	if err != nil || strings.Contains(string(out), "readable") {
		t.Errorf("config check with a 0600 password file: %v\n%s\nwant no warning", err, out)
	}
}
