package build

import (
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/hl7edge/hl7edge/build/skipnote"
)

// releaseVersion is what the release test stamps; a tag-like value so the
// package version goes through the tagged path of package.sh.
const releaseVersion = "v0.0.0-4-gfeedbee"

// maxArm64Bytes fails the build when the stripped arm64 binary grows past
// this; the aim is under 16 MiB.
const maxArm64Bytes = 24 << 20

// TestRelease runs the Makefile's release targets on two snapshots of this
// tree, as two builders would: one a fresh git checkout, one a copy without
// .git at another path. It checks that
//   - `make cross` gives byte-identical, stripped, version-stamped binaries
//     without VCS stamps (reproducible),
//   - `make package` gives byte-identical .debs with the right files, modes,
//     conffile and maintainer scripts, and the binary and config that were
//     built,
//   - the .deb installs, upgrades, removes and purges cleanly (in a private
//     mount namespace over an overlay of /etc, /usr and /var, when root),
//   - `make qemu-selftest` passes: arm64 selftest under qemu-aarch64-static and
//     a 32-bit ARM build refusing the spool under qemu-arm-static.
//
// It takes tens of seconds with a warm build cache and a few minutes cold, so
// it stays out of -short and -race runs; `make test` runs it on its own.
func TestRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("release build: skipped with -short")
	}
	if raceEnabled {
		t.Skip("release build: skipped under -race (make test runs it without)")
	}
	for _, tool := range []string{"make", "git", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("release build needs %s on PATH", tool)
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()

	// Builder A: a git checkout of a snapshot of the working tree.
	a := filepath.Join(tmp, "a")
	copyTree(t, root, a)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=release-test", "-c", "user.email=release-test@example.org", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = a
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "release test snapshot")
	// Builder B: the same files elsewhere, with no .git at all.
	b := filepath.Join(tmp, "elsewhere", "another-builder", "src")
	copyTree(t, a, b)
	// Builder A's environment asks Go to stamp VCS data (as a plain `go
	// build` in a checkout does), so only the Makefile's own flags can make
	// the two builds agree. B could not stamp even if asked.
	envA := []string{"GOFLAGS=-buildvcs=true"}
	envB := []string{"GOFLAGS=-buildvcs=auto"}

	built := t.Run("cross", func(t *testing.T) {
		makeTarget(t, a, envA, "cross")
		makeTarget(t, b, envB, "cross")
		for _, arch := range []string{"arm64", "amd64"} {
			name := "bin/hl7edge-linux-" + arch
			sa, sb := sha256File(t, filepath.Join(a, name)), sha256File(t, filepath.Join(b, name))
			if sa != sb {
				t.Errorf("%s differs between two builds of one tree: %s (git checkout) vs %s (copy at another path)", name, sa, sb)
			} else {
				t.Logf("%s: reproducible, sha256 %s", name, sa)
			}
			checkReleaseBinary(t, filepath.Join(a, name), arch)
		}
		if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
			out := run(t, a, nil, filepath.Join(a, "bin/hl7edge-linux-amd64"), "version")
			if strings.TrimSpace(out) != "hl7edge "+releaseVersion {
				t.Errorf("version prints %q; want the stamp %q", out, "hl7edge "+releaseVersion)
			}
			if out := run(t, a, nil, filepath.Join(a, "bin/hl7edge-linux-amd64"), "config", "check", "build/hl7edge.yaml"); !strings.Contains(out, ": OK") {
				t.Errorf("hl7edge config check build/hl7edge.yaml: %s", out)
			}
		}
	})
	if !built {
		return
	}

	if !t.Run("package", func(t *testing.T) {
		makeTarget(t, a, envA, "package")
		makeTarget(t, b, envB, "package")
		debVersion := strings.TrimSpace(run(t, a, nil, "bash", "build/package.sh", "--deb-version", releaseVersion))
		for _, arch := range []string{"arm64", "amd64"} {
			name := fmt.Sprintf("dist/hl7edge_%s_%s.deb", debVersion, arch)
			deb := filepath.Join(a, name)
			sa, sb := sha256File(t, deb), sha256File(t, filepath.Join(b, name))
			if sa != sb {
				t.Errorf("%s differs between the two builders: %s vs %s", name, sa, sb)
			}
			t.Logf("%s: %d bytes, sha256 %s (reproducible: %v)", name, fileSize(t, deb), sa, sa == sb)
			checkDeb(t, a, deb, arch, debVersion)
		}
	}) {
		return
	}

	t.Run("install", func(t *testing.T) {
		debVersion := strings.TrimSpace(run(t, a, nil, "bash", "build/package.sh", "--deb-version", releaseVersion))
		installInSandbox(t, a, debVersion)
	})

	t.Run("qemu", func(t *testing.T) {
		_, errA64 := exec.LookPath("qemu-aarch64-static")
		_, errArm := exec.LookPath("qemu-arm-static")
		if errA64 != nil && errArm != nil {
			skipnote.Missing(t, "TestRelease/qemu, the arm64 selftest and the 32-bit ARM refusal under qemu", "qemu-aarch64-static and qemu-arm-static", "qemu-user-static")
		}
		out := makeTarget(t, a, envA, "qemu-selftest")
		t.Logf("make qemu-selftest:\n%s", out)
		if errA64 == nil && !strings.Contains(out, "  selftest: PASS") {
			t.Error("the arm64 selftest under qemu-aarch64-static did not pass")
		}
		if errArm == nil && !strings.Contains(out, "spool: FAIL: the spool cannot be opened by a 32-bit build") {
			t.Error("the 32-bit ARM build did not refuse the spool with the ristretto explanation")
		}
	})
}

// makeTarget runs a Makefile target in dir with the test's version stamp and
// a fixed SOURCE_DATE_EPOCH, as a release job would.
func makeTarget(t *testing.T, dir string, env []string, target string) string {
	t.Helper()
	return run(t, dir, append([]string{"SOURCE_DATE_EPOCH=1767225600"}, env...), "make", "--no-print-directory", target, "VERSION="+releaseVersion)
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	// A `make test` above us would hand its jobserver to the inner make.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return k == "MAKEFLAGS" || k == "MFLAGS" || k == "MAKELEVEL"
	})
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// copyTree copies the source files of the repository, leaving out VCS data
// and build output.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		// In a git worktree or submodule .git is a file pointing at another
		// repository; copying it would make the snapshot's git commands act
		// on that repository instead of the copy.
		if rel == ".git" && !d.IsDir() {
			return nil
		}
		if d.IsDir() {
			switch rel {
			case ".git", "bin", "dist":
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, ".test") {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		dst, err := os.OpenFile(filepath.Join(to, rel), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(dst, src); err != nil {
			dst.Close()
			return err
		}
		return dst.Close()
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", from, to, err)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// checkReleaseBinary checks what the Makefile's flags promise: stripped,
// static, for the right machine, stamped, no VCS or path leaks.
func checkReleaseBinary(t *testing.T, path, arch string) {
	t.Helper()
	size := fileSize(t, path)
	t.Logf("%s: %d bytes (%.1f MiB)", filepath.Base(path), size, float64(size)/(1<<20))
	if arch == "arm64" && size > maxArm64Bytes {
		t.Errorf("the stripped arm64 binary is %d bytes; the limit is %d (aim: under 16 MiB)", size, maxArm64Bytes)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	machine := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}[arch]
	if f.Machine != machine {
		t.Errorf("%s is for %v; want %v", path, f.Machine, machine)
	}
	for _, s := range []string{".symtab", ".debug_info", ".zdebug_info"} {
		if f.Section(s) != nil {
			t.Errorf("%s has a %s section: not stripped (-s -w)", path, s)
		}
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s asks for a dynamic loader: it must be static (CGO_ENABLED=0)", path)
		}
	}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
		if strings.HasPrefix(s.Key, "vcs") {
			t.Errorf("%s carries %s=%s: VCS stamps differ between checkouts (use -buildvcs=false)", path, s.Key, s.Value)
		}
	}
	if settings["-trimpath"] != "true" || settings["CGO_ENABLED"] != "0" {
		t.Errorf("%s was built with -trimpath=%q CGO_ENABLED=%q; want true and 0", path, settings["-trimpath"], settings["CGO_ENABLED"])
	}
	// -trimpath keeps -ldflags out of the build info, so look for the stamp
	// itself (the amd64 build also prints it in the cross subtest).
	if b, err := os.ReadFile(path); err != nil || !bytes.Contains(b, []byte(releaseVersion)) {
		t.Errorf("%s does not contain the version stamp %q (%v)", path, releaseVersion, err)
	}
}

// checkDeb inspects one package with dpkg-deb.
func checkDeb(t *testing.T, tree, deb, arch, version string) {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb is not installed (Debian: dpkg)")
	}
	listing := run(t, tree, nil, "dpkg-deb", "-c", deb)
	t.Logf("dpkg-deb -c %s:\n%s", filepath.Base(deb), listing)
	wantFiles := map[string]string{ // path -> mode and owner as dpkg-deb lists them
		"./usr/bin/hl7edge":                        "-rwxr-xr-x root/root",
		"./etc/hl7edge/hl7edge.yaml":               "-rw-r----- root/root",
		"./usr/lib/systemd/system/hl7edge.service": "-rw-r--r-- root/root",
		"./usr/lib/udev/rules.d/60-hl7edge.rules":  "-rw-r--r-- root/root",
		"./usr/lib/tmpfiles.d/hl7edge.conf":        "-rw-r--r-- root/root",
		"./usr/share/hl7edge/mosquitto.acl":        "-rw-r--r-- root/root",
	}
	for line := range strings.Lines(listing) {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		if want, ok := wantFiles[f[len(f)-1]]; ok {
			if got := f[0] + " " + f[1]; got != want {
				t.Errorf("%s: %s is %s; want %s", filepath.Base(deb), f[len(f)-1], got, want)
			}
			delete(wantFiles, f[len(f)-1])
		}
	}
	for p := range wantFiles {
		t.Errorf("%s does not contain %s", filepath.Base(deb), p)
	}

	fields := map[string]string{"Package": "hl7edge", "Architecture": arch, "Version": version, "Pre-Depends": "passwd"}
	for k, want := range fields {
		if got := strings.TrimSpace(run(t, tree, nil, "dpkg-deb", "-f", deb, k)); got != want {
			t.Errorf("%s: %s is %q; want %q", filepath.Base(deb), k, got, want)
		}
	}
	if got := run(t, tree, nil, "dpkg-deb", "-I", deb, "conffiles"); got != "/etc/hl7edge/hl7edge.yaml\n" {
		t.Errorf("%s: conffiles is %q; want /etc/hl7edge/hl7edge.yaml alone", filepath.Base(deb), got)
	}

	// The package holds exactly what was built and written.
	x := t.TempDir()
	run(t, tree, nil, "dpkg-deb", "-x", deb, x)
	ctl := t.TempDir()
	run(t, tree, nil, "dpkg-deb", "-e", deb, ctl)
	same := map[string]string{
		"usr/bin/hl7edge":                        "bin/hl7edge-linux-" + arch,
		"etc/hl7edge/hl7edge.yaml":               "build/hl7edge.yaml",
		"usr/lib/systemd/system/hl7edge.service": "build/hl7edge.service",
		"usr/lib/udev/rules.d/60-hl7edge.rules":  "build/60-hl7edge.rules",
		"usr/lib/tmpfiles.d/hl7edge.conf":        "build/hl7edge.tmpfiles",
		"usr/share/hl7edge/mosquitto.acl":        "build/mosquitto.acl",
	}
	for in, src := range same {
		if sha256File(t, filepath.Join(x, in)) != sha256File(t, filepath.Join(tree, src)) {
			t.Errorf("%s: /%s is not %s", filepath.Base(deb), in, src)
		}
	}
	for _, s := range []string{"preinst", "postinst", "prerm", "postrm"} {
		fi, err := os.Stat(filepath.Join(ctl, s))
		if err != nil {
			t.Errorf("%s has no %s: %v", filepath.Base(deb), s, err)
			continue
		}
		if fi.Mode().Perm()&0o111 == 0 || sha256File(t, filepath.Join(ctl, s)) != sha256File(t, filepath.Join(tree, "build", s)) {
			t.Errorf("%s: %s is not build/%s, executable (mode %v)", filepath.Base(deb), s, s, fi.Mode())
		}
	}
}

// installSteps is run as root in a private mount namespace in which /etc,
// /usr and /var are overlays whose upper layers are in a temporary
// directory, so dpkg, useradd and the maintainer scripts change nothing on
// the machine. /run is an empty tmpfs: "systemd is not running", as in an
// image build.
const installSteps = `set -eu
for d in etc usr var; do
	mkdir -p "$OVL/$d.up" "$OVL/$d.work"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$OVL/$d.up,workdir=$OVL/$d.work" "/$d"
done
mount -t tmpfs tmpfs /run
echo "## install"
# A plain Debian has no gpio group; the udev rule names it and udevd reads
# the rule as soon as it is unpacked, so the group must exist by then.
if getent group gpio >/dev/null; then groupdel gpio; fi
dpkg --unpack "$DEB"
getent group gpio >/dev/null && echo "gpio group exists when the udev rule is unpacked"
dpkg --configure hl7edge
id hl7edge
stat -c '%A %U:%G %n' /etc/hl7edge /etc/hl7edge/hl7edge.yaml
test -L /etc/systemd/system/multi-user.target.wants/hl7edge.service && echo "enabled"
setpriv --reuid=hl7edge --regid=hl7edge --init-groups hl7edge config check /etc/hl7edge/hl7edge.yaml
setpriv --reuid=hl7edge --regid=hl7edge --init-groups sh -c 'touch /etc/hl7edge/.probe && rm /etc/hl7edge/.probe && echo "service user may replace its configuration"'
echo "## upgrade"
echo "# a local edit" >> /etc/hl7edge/hl7edge.yaml
dpkg -i --force-confold "$DEB"
grep -q "# a local edit" /etc/hl7edge/hl7edge.yaml && echo "local edit kept"
systemctl disable hl7edge.service 2>/dev/null
dpkg -i "$DEB"
test -L /etc/systemd/system/multi-user.target.wants/hl7edge.service || echo "stays disabled"
echo "## remove"
dpkg -r hl7edge
test -e /usr/bin/hl7edge || echo "binary removed"
test -e /etc/hl7edge/hl7edge.yaml && echo "configuration kept"
echo "## purge"
mkdir -p /var/lib/hl7edge/spool
dpkg -P hl7edge
test -e /etc/hl7edge/hl7edge.yaml || echo "configuration purged"
test -d /var/lib/hl7edge/spool && echo "spool kept"
`

func installInSandbox(t *testing.T, tree, debVersion string) {
	if os.Geteuid() != 0 {
		t.Skip("installing the package in a sandbox needs root (mount namespace and overlays)")
	}
	for _, tool := range []string{"unshare", "dpkg", "setpriv", "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("installing the package in a sandbox needs %s", tool)
		}
	}
	if out, err := exec.Command("unshare", "--mount", "true").CombinedOutput(); err != nil {
		t.Skipf("no mount namespaces here (%v: %s)", err, bytes.TrimSpace(out))
	}
	arch := strings.TrimSpace(run(t, tree, nil, "dpkg", "--print-architecture"))
	deb := filepath.Join(tree, fmt.Sprintf("dist/hl7edge_%s_%s.deb", debVersion, arch))
	if _, err := os.Stat(deb); err != nil {
		t.Skipf("no package for this machine's architecture %s", arch)
	}
	userBefore := exec.Command("id", "hl7edge").Run() == nil
	ovl := t.TempDir()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", installSteps)
	cmd.Env = append(os.Environ(), "OVL="+ovl, "DEB="+deb)
	out, err := cmd.CombinedOutput()
	t.Logf("dpkg -i / -r / -P in a sandbox:\n%s", out)
	if err != nil {
		t.Fatalf("install steps failed: %v", err)
	}
	for _, want := range []string{
		"gpio group exists when the udev rule is unpacked",
		"groups=",
		"drwxrwx--- root:hl7edge /etc/hl7edge",
		"-rw-r----- root:hl7edge /etc/hl7edge/hl7edge.yaml",
		"enabled",
		"/etc/hl7edge/hl7edge.yaml: OK",
		"service user may replace its configuration",
		"local edit kept",
		"stays disabled",
		"binary removed",
		"configuration kept",
		"configuration purged",
		"spool kept",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("sandbox install: output lacks %q", want)
		}
	}
	for _, g := range []string{"(dialout)", "(gpio)", "(hl7edge)"} {
		if !strings.Contains(string(out), g) {
			t.Errorf("the hl7edge user is not in group %s", g)
		}
	}
	if exec.Command("id", "hl7edge").Run() == nil && !userBefore {
		t.Error("the sandbox leaked: user hl7edge now exists on this machine")
	}
}
