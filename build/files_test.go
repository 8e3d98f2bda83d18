package build

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hl7edge/hl7edge/build/skipnote"
	"github.com/hl7edge/hl7edge/device/config"
	"github.com/hl7edge/hl7edge/pipeline/fileout"
	"github.com/hl7edge/hl7edge/pipeline/gateway"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
)

// unit is a parsed systemd unit: section -> key -> values in file order
// (a key may repeat, as SystemCallFilter= does).
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "", strings.HasPrefix(line, "#"), strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q is neither a section nor a key=value line", path, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// one returns the single value of a key, failing if it is set more than once.
func (u unit) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) > 1 {
		t.Errorf("[%s] %s= is set %d times; want once", section, key, len(vs))
	}
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

func loadDefaultConfig(t *testing.T) *config.Config {
	t.Helper()
	c, err := config.Load("hl7edge.yaml")
	if err != nil {
		t.Fatalf("the packaged default configuration must pass `hl7edge config check`: %v", err)
	}
	return c
}

// fileOf is d's `type: file` block, or nil for another type.
func fileOf(d gateway.Destination) *fileout.Config {
	c, _ := d.Config.(*fileout.Config)
	return c
}

// mllpOf is s's `type: mllp` block, or nil for another type.
func mllpOf(s gateway.Source) *mllp.ListenerConfig {
	c, _ := s.Config.(*mllp.ListenerConfig)
	return c
}

func fileDestinations(c *config.Config) []gateway.Destination {
	var out []gateway.Destination
	for _, d := range c.Destinations {
		if fileOf(d) != nil {
			out = append(out, d)
		}
	}
	return out
}

func TestDefaultConfig(t *testing.T) {
	c := loadDefaultConfig(t)
	if c.Device.Board != "sim" {
		t.Errorf("device.board = %q; the packaged default must be sim, which is safe off the hardware", c.Device.Board)
	}
	if c.Spool.Dir != "/var/lib/hl7edge/spool" {
		t.Errorf("spool.dir = %q; want /var/lib/hl7edge/spool", c.Spool.Dir)
	}
	if c.Admin.Socket != "/run/hl7edge/admin.sock" {
		t.Errorf("admin.socket = %q; want /run/hl7edge/admin.sock", c.Admin.Socket)
	}
	if len(c.Sources) != 1 || mllpOf(c.Sources[0]) == nil || mllpOf(c.Sources[0]).Listen != "0.0.0.0:2575" {
		t.Errorf("sources: want exactly one MLLP source listening on 0.0.0.0:2575, got %+v", c.Sources)
	}
	files := fileDestinations(c)
	if len(files) != 1 || fileOf(files[0]).Dir != "/var/lib/hl7edge/out" {
		t.Errorf("destinations: want one file destination writing to /var/lib/hl7edge/out, got %+v", c.Destinations)
	}
	if c.MQTT.Enabled() {
		t.Errorf("mqtt is enabled (broker %q); the default must run stand-alone", c.MQTT.Broker)
	}
}

// TestUnit checks the hardened unit's promises and that it agrees with the
// configuration loader and the default configuration about paths and limits.
func TestUnit(t *testing.T) {
	u := parseUnit(t, "hl7edge.service")
	c := loadDefaultConfig(t)

	want := []struct{ section, key, value string }{
		{"Service", "Type", "notify"},
		{"Service", "NotifyAccess", "main"},
		{"Service", "WatchdogSec", "30s"},
		{"Service", "Restart", "always"},
		{"Service", "RestartSec", "2s"},
		// A firmware switch exits 75 (device/firmware): restarted even under
		// a drop-in with Restart=on-failure or no, and not counted a failure.
		{"Service", "RestartForceExitStatus", "75"},
		{"Service", "SuccessExitStatus", "75"},
		{"Service", "User", "hl7edge"},
		{"Service", "Group", "hl7edge"},
		{"Service", "StateDirectory", "hl7edge"},
		{"Service", "RuntimeDirectory", "hl7edge"},
		{"Service", "ConfigurationDirectory", "hl7edge"},
		{"Service", "ConfigurationDirectoryMode", "0770"},
		{"Service", "ProtectSystem", "strict"},
		{"Service", "ProtectHome", "yes"},
		{"Service", "PrivateTmp", "yes"},
		{"Service", "NoNewPrivileges", "yes"},
		{"Service", "ExecStart", "/usr/bin/hl7edge run --config " + config.DefaultPath},
		{"Unit", "StartLimitIntervalSec", "0"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	for _, w := range want {
		if got := u.one(t, w.section, w.key); got != w.value {
			t.Errorf("[%s] %s=%q; want %q", w.section, w.key, got, w.value)
		}
	}
	groups := strings.Fields(u.one(t, "Service", "SupplementaryGroups"))
	for _, g := range []string{"dialout", "gpio"} {
		if !slices.Contains(groups, g) {
			t.Errorf("SupplementaryGroups=%v lacks %s", groups, g)
		}
	}

	// Each of these would cut the daemon off serial ports, GPIO chips or
	// /sys/class/leds (see the comment in the unit).
	for _, key := range []string{"PrivateDevices", "ProtectClock", "ProtectKernelTunables", "PrivateUsers", "DynamicUser"} {
		if v := u.one(t, "Service", key); v != "" && v != "no" && v != "false" {
			t.Errorf("%s=%s would block serial, GPIO or LED access; leave it out", key, v)
		}
	}
	if v := u["Service"]["DeviceAllow"]; len(v) > 0 {
		t.Errorf("DeviceAllow=%v turns on a device allow-list that misses serial adapters plugged in after start", v)
	}
	if v := u.one(t, "Service", "DevicePolicy"); v != "" && v != "auto" {
		t.Errorf("DevicePolicy=%s blocks serial ports and GPIO chips", v)
	}
	rw := u["Service"]["ReadWritePaths"]
	if !slices.ContainsFunc(rw, func(v string) bool { return slices.Contains(strings.Fields(v), "-/sys/class/leds") }) {
		t.Errorf("ReadWritePaths=%v: want -/sys/class/leds (the '-' keeps a board without LEDs starting)", rw)
	}

	// The health loop reads the clock's sync state with adjtimex; a syscall
	// filter must let it through after any deny list that covers it.
	lastDeny, lastAllow := -1, -1
	for i, v := range u["Service"]["SystemCallFilter"] {
		deny := strings.HasPrefix(v, "~")
		for _, f := range strings.Fields(strings.TrimPrefix(v, "~")) {
			switch {
			case deny && (f == "adjtimex" || f == "@clock" || f == "@privileged"):
				lastDeny = i
			case !deny && f == "adjtimex":
				lastAllow = i
			}
		}
	}
	if len(u["Service"]["SystemCallFilter"]) > 0 && lastAllow <= lastDeny {
		t.Errorf("SystemCallFilter=%v: adjtimex must be allowed after the last deny list that removes it", u["Service"]["SystemCallFilter"])
	}

	// Paths the unit provides must be where the configuration puts things.
	state := "/var/lib/" + u.one(t, "Service", "StateDirectory") + "/"
	if !strings.HasPrefix(c.Spool.Dir, state) {
		t.Errorf("spool.dir %s is outside StateDirectory %s, which is the only writable place for it", c.Spool.Dir, state)
	}
	for _, d := range fileDestinations(c) {
		if !strings.HasPrefix(fileOf(d).Dir, state) {
			t.Errorf("file destination %s writes to %s, outside StateDirectory %s", d.Name, fileOf(d).Dir, state)
		}
	}
	// Firmware images are written and then executed from firmware.dir
	// (device/firmware): it must be writable, and no path list may forbid
	// executing there.
	if !strings.HasPrefix(c.Firmware.Dir+"/", state) {
		t.Errorf("firmware.dir %s is outside StateDirectory %s, the only writable place for images", c.Firmware.Dir, state)
	}
	for _, k := range []string{"NoExecPaths", "ExecPaths", "ReadOnlyPaths", "InaccessiblePaths"} {
		for _, v := range u["Service"][k] {
			if strings.HasPrefix(c.Firmware.Dir+"/", strings.TrimPrefix(strings.TrimPrefix(v, "-"), "+")) || strings.HasPrefix(v, "/var") || v == "/" {
				t.Errorf("%s=%s covers firmware.dir %s: the launcher could not run a downloaded image", k, v, c.Firmware.Dir)
			}
		}
	}
	if run := "/run/" + u.one(t, "Service", "RuntimeDirectory"); filepath.Dir(c.Admin.Socket) != run {
		t.Errorf("admin.socket %s is not in RuntimeDirectory %s", c.Admin.Socket, run)
	}
	if etc := "/etc/" + u.one(t, "Service", "ConfigurationDirectory"); filepath.Dir(config.DefaultPath) != etc {
		t.Errorf("config.DefaultPath %s is not in ConfigurationDirectory %s, which apply-config must write", config.DefaultPath, etc)
	}

	// One descriptor per Badger table (1 MiB each) plus every connection.
	need := int(int64(c.Spool.MaxBytes)>>20) + 256
	for _, s := range c.Sources {
		if m := mllpOf(s); m != nil {
			need += m.MaxConnections
		}
	}
	if n, err := strconv.Atoi(u.one(t, "Service", "LimitNOFILE")); err != nil || n < need {
		t.Errorf("LimitNOFILE=%s; the default spool and connection limits need at least %d", u.one(t, "Service", "LimitNOFILE"), need)
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker over the unit. The
// only change is ExecStart's binary, pointed at this test's executable,
// because /usr/bin/hl7edge exists only once the package is installed.
func TestSystemdAnalyzeVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		skipnote.Missing(t, "TestSystemdAnalyzeVerify, systemd's check of the unit", "systemd-analyze", "systemd")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("hl7edge.service")
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("/usr/bin/hl7edge ")); n != 1 {
		t.Fatalf("hl7edge.service names /usr/bin/hl7edge %d times; want once (ExecStart)", n)
	}
	verify := func(text []byte) (string, error) {
		dir := t.TempDir()
		p := filepath.Join(dir, "hl7edge.service")
		if err := os.WriteFile(p, text, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	unitText := bytes.Replace(b, []byte("/usr/bin/hl7edge "), []byte(self+" "), 1)
	if out, err := verify(unitText); err != nil || out != "" {
		t.Errorf("systemd-analyze verify hl7edge.service: %v\n%s", err, out)
	}
	// The checker must be able to complain here, or the clean result above
	// proves nothing.
	if out, _ := verify(append(slices.Clone(unitText), "\n[Service]\nProtectSytem=strict\n"...)); !strings.Contains(out, "ProtectSytem") {
		t.Errorf("systemd-analyze verify accepted a misspelt key silently (%q); its clean result proves nothing", out)
	}
}

// TestTmpfilesCleansArchiveOnly runs systemd-tmpfiles' clean-up over a
// throw-away root: old archive files go, new ones and the spool stay.
func TestTmpfilesCleansArchiveOnly(t *testing.T) {
	b, err := os.ReadFile("hl7edge.tmpfiles")
	if err != nil {
		t.Fatal(err)
	}
	c := loadDefaultConfig(t)
	var cleaned []string
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			cleaned = append(cleaned, f[1])
		}
	}
	files := fileDestinations(c)
	if len(files) == 0 || !slices.Equal(cleaned, []string{fileOf(files[0]).Dir}) {
		t.Fatalf("hl7edge.tmpfiles cleans %v; want exactly the default file destination's directory", cleaned)
	}
	if _, err := exec.LookPath("systemd-tmpfiles"); err != nil {
		t.Skip("systemd-tmpfiles is not installed")
	}
	root := t.TempDir()
	old := time.Now().Add(-30 * 24 * time.Hour)
	mk := func(p string, mtime time.Time) string {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return full
	}
	oldArchive := mk(filepath.Join(fileOf(files[0]).Dir, "old.hl7"), old)
	newArchive := mk(filepath.Join(fileOf(files[0]).Dir, "new.hl7"), time.Now())
	oldSpool := mk(filepath.Join(c.Spool.Dir, "000001.sst"), old)
	oldImage := mk(filepath.Join(c.Firmware.Dir, "hl7edge-1.0"), old)
	conf, err := filepath.Abs("hl7edge.tmpfiles")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-tmpfiles", "--root="+root, "--clean", conf).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-tmpfiles --clean: %v\n%s", err, out)
	}
	if _, err := os.Stat(oldArchive); !os.IsNotExist(err) {
		t.Errorf("a 30-day-old archive file survived the clean-up (%v)", err)
	}
	for _, p := range []string{newArchive, oldSpool, oldImage} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("the clean-up removed %s: %v", p, err)
		}
	}
}

// TestDebVersion checks the mapping from git describe to Debian versions,
// which dpkg uses to decide what is an upgrade.
func TestDebVersion(t *testing.T) {
	cases := map[string]string{
		"v1.2.3":                  "1.2.3",
		"v1.2.3-4-gabc1234":       "1.2.3+4.gabc1234",
		"v1.2.3-4-gabc1234-dirty": "1.2.3+4.gabc1234.dirty",
		"v1.3.0-rc1":              "1.3.0~rc1",
		"abc1234":                 "0.0.0~gitabc1234",
		"7112503-dirty":           "0.0.0~git7112503.dirty",
		"dev":                     "0.0.0~gitdev",
	}
	got := map[string]string{}
	for in, want := range cases {
		out, err := exec.Command("bash", "package.sh", "--deb-version", in).Output()
		if err != nil {
			t.Fatalf("package.sh --deb-version %s: %v", in, err)
		}
		got[in] = strings.TrimSpace(string(out))
		if got[in] != want {
			t.Errorf("deb version of %q = %q; want %q", in, got[in], want)
		}
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg is not installed; versions not validated")
	}
	for in, v := range got {
		if out, err := exec.Command("dpkg", "--validate-version", v).CombinedOutput(); err != nil {
			t.Errorf("dpkg rejects %q (from %q): %s", v, in, out)
		}
	}
	order := []string{got["abc1234"], got["v1.2.3"], got["v1.2.3-4-gabc1234"], got["v1.3.0-rc1"], "1.3.0"}
	for i := 1; i < len(order); i++ {
		if err := exec.Command("dpkg", "--compare-versions", order[i-1], "lt", order[i]).Run(); err != nil {
			t.Errorf("dpkg does not order %s before %s", order[i-1], order[i])
		}
	}
}

func TestScriptsParse(t *testing.T) {
	for _, s := range []struct{ shell, file string }{
		{"sh", "preinst"}, {"sh", "postinst"}, {"sh", "prerm"}, {"sh", "postrm"},
		{"bash", "package.sh"}, {"bash", "qemu-selftest.sh"},
		{"sh", "system-arm64/image.sh"}, {"sh", "system-arm64/guest.sh"}, {"bash", "system-arm64/run.sh"},
	} {
		if out, err := exec.Command(s.shell, "-n", s.file).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", s.shell, s.file, err, out)
		}
		if fi, err := os.Stat(s.file); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s must be executable (%v)", s.file, err)
		}
	}
}

// Every group 60-hl7edge.rules names is created by preinst, before dpkg
// unpacks the rule: udevd resolves a group when it reads the rule, and keeps
// an unknown one ignored until the file changes or the box reboots.
func TestUdevGroupsExistBeforeRuleUnpacks(t *testing.T) {
	rules, err := os.ReadFile("60-hl7edge.rules")
	if err != nil {
		t.Fatal(err)
	}
	pre, err := os.ReadFile("preinst")
	if err != nil {
		t.Fatal(err)
	}
	var created []string
	for line := range strings.Lines(string(pre)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "for g in "); ok {
			created = strings.Fields(strings.TrimSuffix(rest, "; do"))
		}
	}
	named := regexp.MustCompile(`GROUP="([^"]+)"|chgrp ([a-z_][a-z0-9_-]*)`).FindAllStringSubmatch(string(rules), -1)
	if len(named) == 0 {
		t.Fatal("60-hl7edge.rules names no group; update this test")
	}
	for _, m := range named {
		g := m[1] + m[2]
		if !slices.Contains(created, g) {
			t.Errorf("60-hl7edge.rules names group %q, which preinst does not create (preinst creates %v)", g, created)
		}
	}
	if !strings.Contains(string(pre), "install | upgrade)") {
		t.Error("preinst must create the groups on install and upgrade")
	}
}
