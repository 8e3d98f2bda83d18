package powercut

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// needs lists what the rig runs, with the Debian package that has it.
var needs = [][2]string{
	{"qemu-system-x86_64", "qemu-system-x86"},
	{"mkfs.ext4", "e2fsprogs"},
	{"debugfs", "e2fsprogs"},
	{"apt-get", "apt"},
	{"dpkg-deb", "dpkg"},
}

// missingTools names what is not installed and the Debian packages that
// have it, or "" when everything is.
func missingTools() (tools, pkgs string) {
	var miss, deb []string
	for _, n := range needs {
		if _, err := exec.LookPath(n[0]); err != nil {
			miss = append(miss, n[0])
			if !slices.Contains(deb, n[1]) {
				deb = append(deb, n[1])
			}
		}
	}
	return strings.Join(miss, ", "), strings.Join(deb, " ")
}

// cacheDir is where the kernel and the builds are kept between runs:
// outside the repository.
func cacheDir() (string, error) {
	if d := os.Getenv("POWERCUT_CACHE"); d != "" {
		return d, os.MkdirAll(d, 0o755)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	d := filepath.Join(base, "hl7edge-powercut")
	return d, os.MkdirAll(d, 0o755)
}

// kernel returns the vmlinuz and module tree of Debian's linux-image-amd64,
// downloading and unpacking it (not installing it) on first use.
func kernel(cache string) (vmlinuz, modules string, err error) {
	kdir := filepath.Join(cache, "kernel")
	find := func() (string, string) {
		vm, _ := filepath.Glob(filepath.Join(kdir, "boot", "vmlinuz-*"))
		md, _ := filepath.Glob(filepath.Join(kdir, "lib", "modules", "*"))
		if len(vm) == 1 && len(md) == 1 {
			return vm[0], md[0]
		}
		return "", ""
	}
	if v, m := find(); v != "" {
		return v, m, nil
	}
	dl := filepath.Join(cache, "deb")
	_ = os.RemoveAll(dl)
	if err := os.MkdirAll(dl, 0o777); err != nil {
		return "", "", err
	}
	// linux-image-amd64 is a metapackage: the kernel is in what it depends on.
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("apt-cache depends linux-image-amd64: %v\n%s", err, out)
	}
	pkg := ""
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
		}
	}
	if pkg == "" {
		return "", "", fmt.Errorf("linux-image-amd64 depends on no linux-image-* package:\n%s", out)
	}
	cmd := exec.Command("apt-get", "download", pkg)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return "", "", fmt.Errorf("apt-get download %s left %v", pkg, debs)
	}
	_ = os.RemoveAll(kdir)
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], kdir).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("dpkg-deb -x %s: %v\n%s", debs[0], err, out)
	}
	_ = os.RemoveAll(dl)
	if v, m := find(); v != "" {
		return v, m, nil
	}
	return "", "", fmt.Errorf("%s holds no boot/vmlinuz-* and lib/modules/*", kdir)
}

// wantModules are what the guest loads: virtio disk, network and RNG, ext4.
// crc32c_generic is ext4's checksum, which it asks the crypto API for
// instead of depending on it.
var wantModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "crc32c_generic", "ext4"}

// moduleOrder resolves wantModules and what they depend on (each .ko's
// .modinfo "depends=") into a load order, dependencies first.
func moduleOrder(modDir string) ([]string, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			paths[strings.ReplaceAll(strings.TrimSuffix(d.Name(), ".ko"), "-", "_")] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var order []string
	seen := map[string]bool{}
	var visit func(string) error
	visit = func(m string) error {
		m = strings.ReplaceAll(m, "-", "_")
		if seen[m] {
			return nil
		}
		seen[m] = true
		p, ok := paths[m]
		if !ok {
			return fmt.Errorf("module %s is not in %s (built in, or a different kernel?)", m, modDir)
		}
		f, err := elf.Open(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		defer f.Close()
		if s := f.Section(".modinfo"); s != nil {
			b, _ := s.Data()
			for _, kv := range bytes.Split(b, []byte{0}) {
				if dep, ok := strings.CutPrefix(string(kv), "depends="); ok && dep != "" {
					for _, d := range strings.Split(dep, ",") {
						if err := visit(d); err != nil {
							return err
						}
					}
				}
			}
		}
		order = append(order, p)
		return nil
	}
	for _, m := range wantModules {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// cpio writes a newc archive (the initramfs format) without needing root
// for the device node.
type cpio struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpio) entry(name string, mode uint32, data []byte, rmajor, rminor int) {
	if c.err != nil {
		return
	}
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	buf := append([]byte(hdr), name...)
	buf = append(buf, 0)
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	buf = append(buf, data...)
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	_, c.err = c.w.Write(buf)
}

// initramfs packs /init, /hl7edge, the configuration and the modules.
func initramfs(path, initBin, hl7edgeBin string, config []byte, modules []string) error {
	var b bytes.Buffer
	c := &cpio{w: &b}
	for _, d := range []string{"dev", "proc", "sys", "run", "etc", "data", "modules"} {
		c.entry(d, syscall.S_IFDIR|0o755, nil, 0, 0)
	}
	// The kernel opens /dev/console for init before anything is mounted.
	c.entry("dev/console", syscall.S_IFCHR|0o600, nil, 5, 1)
	add := func(name, src string, mode uint32) {
		data, err := os.ReadFile(src)
		if err != nil && c.err == nil {
			c.err = err
		}
		c.entry(name, syscall.S_IFREG|mode, data, 0, 0)
	}
	add("init", initBin, 0o755)
	add("hl7edge", hl7edgeBin, 0o755)
	c.entry("etc/hl7edge.yaml", syscall.S_IFREG|0o644, config, 0, 0)
	var names []string
	for _, m := range modules {
		add("modules/"+filepath.Base(m), m, 0o644)
		names = append(names, filepath.Base(m))
	}
	c.entry("modules/order", syscall.S_IFREG|0o644, []byte(strings.Join(names, "\n")+"\n"), 0, 0)
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	if c.err != nil {
		return c.err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// goBuild builds a static binary of pkg (relative to the repository root).
func goBuild(out, pkg string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// vm is one boot of the virtual machine.
type vm struct {
	cmd     *exec.Cmd
	start   time.Time
	exited  chan struct{}
	mu      sync.Mutex
	lines   []string
	watches []func(string)
	console *os.File
}

type vmConfig struct {
	kernel, initrd string
	accel          string // "kvm" or "tcg"
	drive          string // qemu -drive value
	fwd            []string
	console        string // file the serial console is appended to
}

func bootVM(c vmConfig) (*vm, error) {
	args := []string{
		"-nodefaults", "-no-reboot", "-display", "none", "-monitor", "none",
		"-machine", "q35,accel=" + c.accel, "-cpu", "max", "-m", "512", "-smp", "1",
		"-kernel", c.kernel, "-initrd", c.initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4",
		"-serial", "stdio",
		"-drive", c.drive,
		"-device", "virtio-rng-pci",
		"-netdev", "user,id=n0,net=10.0.2.0/24,host=10.0.2.2," + strings.Join(c.fwd, ","),
		"-device", "virtio-net-pci,netdev=n0",
	}
	if c.accel == "kvm" {
		args[9] = "host" // -cpu
	}
	v := &vm{cmd: exec.Command("qemu-system-x86_64", args...), exited: make(chan struct{})}
	f, err := os.OpenFile(c.console, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	v.console = f
	out, err := v.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	v.cmd.Stderr = f
	v.cmd.Stdin = nil
	v.start = time.Now()
	if err := v.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("qemu-system-x86_64: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintln(f, line)
			v.mu.Lock()
			v.lines = append(v.lines, line)
			ws := v.watches
			v.mu.Unlock()
			for _, w := range ws {
				w(line)
			}
		}
		_ = v.cmd.Wait()
		f.Close()
		close(v.exited)
	}()
	return v, nil
}

// watch calls f with every console line from now on (from the reader
// goroutine: f must not block).
func (v *vm) watch(f func(string)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.watches = append(v.watches, f)
}

// waitLine waits for a console line containing s; it fails early when the
// VM exits or a line contains any of fail.
func (v *vm) waitLine(s string, timeout time.Duration, fail ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	seen := 0
	for {
		v.mu.Lock()
		lines := v.lines[seen:]
		seen = len(v.lines)
		v.mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, s) {
				return l, nil
			}
			for _, f := range fail {
				if strings.Contains(l, f) {
					return l, fmt.Errorf("console: %s", l)
				}
			}
		}
		select {
		case <-v.exited:
			return "", errors.New("qemu exited")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no console line %q within %s", s, timeout)
		}
	}
}

func (v *vm) tail(n int) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	l := v.lines
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// cut is the power cut: SIGKILL, no chance to flush anything.
func (v *vm) cut() {
	_ = v.cmd.Process.Signal(syscall.SIGKILL)
	<-v.exited
}
