package firmware

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hl7edge/hl7edge/device/atomicfile"
	"github.com/hl7edge/hl7edge/device/strictjson"
	"github.com/hl7edge/hl7edge/device/trust"
	"github.com/hl7edge/hl7edge/pipeline/vocab/health"
	"github.com/hl7edge/hl7edge/storage/syncgate"
)

// DownloadTimeout bounds one image download.
const DownloadTimeout = 10 * time.Minute

// maxLegacyImage bounds an image signed in minisign's legacy format, which
// must be held in memory to verify (the default prehashed format streams).
const maxLegacyImage = 32 << 20

// Options are a Manager's collaborators; one Manager serves one running box.
type Options struct {
	Config   Config
	Keys     *trust.Keys
	Version  string // of this process
	Log      *slog.Logger
	Snapshot func() health.Snapshot
	// Gates are the disk sync gates of the spool beside firmware.dir: the
	// state file's and the image's syncs go through them (storage/syncgate).
	// nil: their own syncs.
	Gates *syncgate.Gates
	// Publish puts the state on the retained firmware topic; nil: nowhere.
	Publish func(Public)
	Alarm   func(kind, detail string)
	// Relaunch stops the gateway and ends the process, so that the service
	// manager (Restart=) starts the launcher, which runs the right image.
	Relaunch func(why string)
}

// Manager carries out firmware-update and watches a trial.
type Manager struct {
	o  Options
	mu sync.Mutex // one update at a time
}

// New makes a Manager.
func New(o Options) *Manager {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With("component", "firmware")
	if o.Alarm == nil {
		o.Alarm = func(string, string) {}
	}
	if o.Relaunch == nil {
		o.Relaunch = func(string) {}
	}
	return &Manager{o: o}
}

// Args are firmware-update's arguments.
type Args struct {
	URL     string `json:"url"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	Minisig string `json:"minisig"`
	// AllowDowngrade lets an image older than the running version (or one
	// whose version cannot be ordered) be installed: a roll-back chosen on
	// purpose, and signed like the rest of the command.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)

func (a Args) check() error {
	var errs []error
	u, err := url.Parse(a.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, errors.New(`"url" must be an https:// URL of the image`))
	}
	if !versionRE.MatchString(a.Version) {
		errs = append(errs, errors.New(`"version" must be 1-64 letters, digits, '.', '_', '+', '~' or '-'`))
	}
	if b, err := hex.DecodeString(a.SHA256); err != nil || len(b) != sha256.Size {
		errs = append(errs, errors.New(`"sha256" must be the image's SHA-256 in 64 hex digits (sha256sum)`))
	}
	if strings.TrimSpace(a.Minisig) == "" {
		errs = append(errs, errors.New(`"minisig" must be the text of the image's .minisig file (minisign -S -m IMAGE)`))
	}
	return errors.Join(errs...)
}

// Update is the firmware-update command: download, verify, stage, then
// switch to trial and relaunch. Any failure before the switch leaves the
// running version as it is, with the state rejected and the reason.
func (m *Manager) Update(ctx context.Context, id string, raw json.RawMessage) (any, string, error) {
	var a Args
	// Signed bytes: no key may mean one thing to Go and another to the signer.
	if err := strictjson.Unmarshal(raw, &a); err != nil {
		return nil, "", fmt.Errorf(`firmware-update args are not {"url","version","sha256","minisig"[,"allow_downgrade":true]}: %w`, err)
	}
	if err := a.check(); err != nil {
		return nil, "", fmt.Errorf("firmware-update refused: %w", err)
	}
	if m.o.Keys.Len() == 0 {
		return nil, "", errors.New("firmware-update refused: this gateway has no trust.keys, so no image can be verified; add the operators' minisign public keys under trust.keys")
	}
	if a.Version == m.o.Version {
		return nil, "", fmt.Errorf("firmware-update refused: version %s is already running", a.Version)
	}
	if err := m.checkOrder(a); err != nil {
		return nil, "", fmt.Errorf("firmware-update refused: %w", err)
	}
	if !m.mu.TryLock() {
		return nil, "", errors.New("firmware-update refused: another update is under way; wait for it to end")
	}
	defer m.mu.Unlock()
	dir := m.o.Config.Dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", fmt.Errorf("firmware.dir: %w", err)
	}
	old, _, err := Load(dir)
	if err != nil {
		return nil, "", err
	}
	if old.State.InProgress() {
		return nil, "", fmt.Errorf("firmware-update refused: version %s is %s; wait for it to be committed or rolled back", old.Version, old.State)
	}
	st := State{
		State: Downloading, Version: a.Version, Previous: m.o.Version, Command: id,
		Image:       imagePrefix + a.Version,
		Good:        filepath.Base(RunningImage()), // what runs now is good: no update starts during a trial
		GoodVersion: m.o.Version,
		Trial:       m.o.Config.Trial.D(),
		Before:      upComponents(m.o.Snapshot()),
	}
	st.Installed = old.Installed
	if RunningImage() == "" {
		st.Good, st.Installed = "", m.o.Version
	}
	if err := m.save(st); err != nil {
		return nil, "", err
	}
	m.o.Log.Info("firmware download", "id", id, "version", a.Version, "url", redact(a.URL))
	tmp := filepath.Join(dir, downloadPrefix+a.Version)
	gate, err := m.o.Gates.For(dir)
	if err != nil {
		return m.reject(st, tmp, err.Error())
	}
	since := gate.Epoch() // before the image's first byte: the card may drop any
	sum, err := m.download(ctx, a.URL, tmp, func(f *os.File) error {
		writeBack(f)
		return gate.Sync(since, f.Sync)
	})
	if err != nil {
		return m.reject(st, tmp, "download failed: "+whatToDo(err))
	}
	st.State = Verifying
	if err := m.save(st); err != nil {
		return m.reject(st, tmp, err.Error())
	}
	if !strings.EqualFold(sum, a.SHA256) {
		return m.reject(st, tmp, fmt.Sprintf("the image's sha256 is %s, the command says %s; nothing changed", sum, strings.ToLower(a.SHA256)))
	}
	keyID, _, err := m.o.Keys.VerifyFile(tmp, a.Minisig, min(int64(m.o.Config.MaxBytes), maxLegacyImage))
	if err != nil {
		return m.reject(st, tmp, fmt.Sprintf("image signature refused: %v; nothing changed", err))
	}
	image := filepath.Join(dir, st.Image)
	if err := makeRunnable(tmp); err != nil { // run by this user only
		return m.reject(st, tmp, err.Error())
	}
	if err := os.Rename(tmp, image); err != nil {
		return m.reject(st, tmp, err.Error())
	}
	if err := atomicfile.SyncDir(gate, since, dir); err != nil {
		return m.reject(st, image, whatToDo(err))
	}
	st.State, st.Reason = Trial, fmt.Sprintf("verified (sha256 and key %s); restarting into it; kept if healthy for %s", keyID, st.Trial)
	if err := m.save(st); err != nil {
		return m.reject(st, image, err.Error())
	}
	m.o.Log.Info("firmware verified; relaunching into the trial", "id", id, "version", a.Version, "key", keyID)
	m.o.Relaunch(fmt.Sprintf("firmware %s on trial", a.Version))
	return m.public(st), fmt.Sprintf("version %s verified; restarting into it; rolled back unless healthy after %s", a.Version, st.Trial), nil
}

// checkOrder refuses an image older than the running version, or one that
// cannot be ordered against a running release, unless the command allows
// a downgrade. A running build that is no release (a development build)
// takes any release.
func (m *Manager) checkOrder(a Args) error {
	if a.AllowDowngrade {
		return nil
	}
	if _, ok := parseVersion(m.o.Version); !ok {
		if _, ok := parseVersion(a.Version); ok {
			return nil
		}
	}
	c, ok := compareVersions(a.Version, m.o.Version)
	switch {
	case !ok:
		return fmt.Errorf("version %s cannot be ordered against the running %s (use numbers such as 1.4.2); to install it anyway send the command with \"allow_downgrade\": true", a.Version, m.o.Version)
	case c < 0:
		return fmt.Errorf("version %s is older than the running %s; to roll back on purpose send the command with \"allow_downgrade\": true", a.Version, m.o.Version)
	}
	return nil
}

func (m *Manager) reject(st State, file, reason string) (any, string, error) {
	_ = os.Remove(file)
	st.State, st.Reason = Rejected, reason
	if err := m.save(st); err != nil {
		m.o.Log.Error("firmware state not saved", "err", err)
	}
	m.o.Log.Warn("firmware update rejected", "id", st.Command, "version", st.Version, "reason", reason)
	return nil, "", fmt.Errorf("firmware-update of version %s rejected: %s", st.Version, reason)
}

func (m *Manager) save(st State) error {
	if err := Save(m.o.Gates, m.o.Config.Dir, st); err != nil {
		return err
	}
	if m.o.Publish != nil {
		m.o.Publish(m.public(st))
	}
	return nil
}

func (m *Manager) public(st State) Public {
	return Public{State: st.State, Version: st.Version, Previous: st.Previous, Reason: st.Reason, Command: st.Command,
		Updated: time.Now().UTC(), Running: m.o.Version}
}

// writeBack writes the image's pages to the card before its sync waits
// for the gate: every sync on the card waits while one holds the gate, the
// spool's too (and with it every ACK), and an image of firmware.max_bytes
// takes an SD card seconds to write. The gate is then held for the flush
// alone. It asks the card to flush nothing, so it cannot cost another
// writer its writes (the kernel's own write-back does the same at any
// time). It runs on a descriptor of its own and reports nothing: Linux
// reports a page it could not write to every descriptor open at the time,
// so the sync that follows, through the gate, fails with it.
func writeBack(f *os.File) {
	own, err := os.Open(f.Name())
	if err != nil {
		return
	}
	defer own.Close()
	_ = unix.SyncFileRange(int(own.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}

// whatToDo is why an image could not be staged, with what to do when
// another writer's disk sync failed meanwhile.
func whatToDo(err error) string {
	if errors.Is(err, syncgate.ErrFailedSince) {
		return fmt.Sprintf("%v; nothing changed: send the command again, and if this repeats check the storage health (docs/power-loss.md)", err)
	}
	return err.Error()
}

// download fetches url into file over verified TLS, at most MaxBytes, and
// syncs it with sync; it returns the SHA-256 in hex.
func (m *Manager) download(ctx context.Context, rawURL, file string, sync func(*os.File) error) (string, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if m.o.Config.CAFile != "" {
		pem, err := os.ReadFile(m.o.Config.CAFile)
		if err != nil {
			return "", fmt.Errorf("firmware.ca_file: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return "", fmt.Errorf("firmware.ca_file %s holds no PEM certificate", m.o.Config.CAFile)
		}
	}
	client := &http.Client{
		Timeout: DownloadTimeout,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			Proxy:           http.ProxyFromEnvironment,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" {
				return errors.New("redirect to a non-https URL refused")
			}
			if len(via) >= 5 {
				return errors.New("more than 5 redirects")
			}
			return nil
		},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s", redactErr(err, rawURL))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the server answered %s", resp.Status)
	}
	limit := int64(m.o.Config.MaxBytes)
	if resp.ContentLength > limit {
		return "", fmt.Errorf("the image is %d bytes, over firmware.max_bytes %d", resp.ContentLength, limit)
	}
	f, err := createStaged(file)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("the image is over firmware.max_bytes %d", limit)
	}
	if err == nil {
		err = sync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// createStaged makes file anew for a download. Whatever a stop or someone
// else left at its path is unlinked first, never followed, and the open
// refuses to follow a symbolic link or to reuse a file that appeared
// meanwhile: the image is written only into a regular file of our own in
// firmware.dir.
func createStaged(file string) (*os.File, error) {
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove what is at %s: %w", file, err)
	}
	return os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
}

// makeRunnable makes a verified staged file executable by this user,
// through a descriptor opened without following links, after checking it
// is a regular file.
func makeRunnable(file string) error {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("staged image: %w", err)
	}
	defer f.Close()
	if err := checkRegular(f, file); err != nil {
		return err
	}
	return f.Chmod(0o700)
}

// checkRegular refuses anything but a regular file.
func checkRegular(f *os.File, file string) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("staged image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("staged image %s is not a regular file (%s); remove it", file, fi.Mode().Type())
	}
	return nil
}

// redact drops a URL's query and user info, which may carry tokens.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}

func redactErr(err error, raw string) string {
	return strings.ReplaceAll(err.Error(), raw, redact(raw))
}

// upComponents names every component that is up, as "kind name".
func upComponents(s health.Snapshot) []string {
	var out []string
	add := func(kind health.Kind, list []health.ComponentSnapshot) {
		for _, c := range list {
			if c.State == health.Up {
				out = append(out, string(kind)+" "+c.Name)
			}
		}
	}
	add(health.Source, s.Sources)
	add(health.Destination, s.Destinations)
	add(health.Service, s.Services)
	return out
}

// Run publishes the state, raises the alarm of a roll-back the launcher
// (or a failed trial) made, and, in the image on trial, waits out the
// trial and commits it or rolls it back. It returns when ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	dir := m.o.Config.Dir
	st, ok := m.announce()
	if !ok || st.State != Trial || st.Starts < 1 || RunningImage() != filepath.Join(dir, st.Image) {
		return nil
	}
	t := time.NewTimer(time.Until(st.TrialEnds))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-t.C:
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, _, err := Load(dir); err != nil || cur.State != Trial || cur.Image != st.Image {
		return nil // settled meanwhile
	}
	if problems := trialProblems(st.Before, m.o.Snapshot()); len(problems) > 0 {
		st.State = RolledBack
		st.Reason = fmt.Sprintf("version %s was unhealthy at the end of its trial of %s: %s", st.Version, st.Trial, strings.Join(problems, "; "))
		m.o.Log.Error("firmware trial failed; rolling back", "version", st.Version, "reason", st.Reason)
		if err := m.save(st); err != nil {
			m.o.Log.Error("firmware state not saved", "err", err)
		}
		m.o.Relaunch("firmware trial failed")
		return nil
	}
	st.State, st.Good, st.GoodVersion = Committed, st.Image, st.Version
	st.Reason = fmt.Sprintf("healthy for its trial of %s; kept", st.Trial)
	if err := m.save(st); err != nil {
		m.o.Log.Error("firmware state not saved", "err", err)
		return nil
	}
	prune(dir, st.Good, m.o.Log)
	m.o.Log.Info("firmware committed", "version", st.Version, "previous", st.Previous)
	m.o.Alarm(AlarmFirmwareCommitted, fmt.Sprintf("firmware version %s committed after a healthy trial of %s (previous %s)", st.Version, st.Trial, st.Previous))
	return nil
}

// announce publishes the state at start and raises the alarm of a
// roll-back not yet announced. It holds the update lock, so an update
// arriving at once cannot have its state overwritten.
func (m *Manager) announce() (State, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := m.o.Config.Dir
	st, ok, err := Load(dir)
	if err != nil {
		m.o.Log.Error("firmware state unreadable", "err", err)
		return st, false
	}
	if !ok {
		return st, false
	}
	if m.o.Publish != nil {
		m.o.Publish(m.public(st))
	}
	if st.State == RolledBack && !st.Announced {
		m.o.Alarm(AlarmFirmwareRolledBack, fmt.Sprintf("firmware version %s rolled back; running %s: %s", st.Version, m.o.Version, st.Reason))
		st.Announced = true
		if err := Save(m.o.Gates, dir, st); err != nil {
			m.o.Log.Error("firmware state not saved", "err", err)
		}
	}
	return st, true
}

// trialProblems lists what was up before the update and is not up now.
func trialProblems(before []string, now health.Snapshot) []string {
	var out []string
	up := map[string]bool{}
	for _, c := range upComponents(now) {
		up[c] = true
	}
	for _, c := range before {
		if !up[c] {
			out = append(out, c+" is not up")
		}
	}
	for _, s := range now.Stalled {
		out = append(out, "loop "+s+" stalled")
	}
	if now.Spool.Error != "" {
		out = append(out, "spool: "+now.Spool.Error)
	}
	return out
}
