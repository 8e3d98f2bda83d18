package firmware

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// EnvImage is set, to the image's path, in the environment of a process the
// launcher started from an image, so that the image does not launch again
// and knows which image it is.
const EnvImage = "HL7EDGE_FIRMWARE_IMAGE"

// imagePrefix names image files in Dir; downloadPrefix their partial downloads.
const (
	imagePrefix    = "hl7edge-"
	downloadPrefix = ".download-"
)

// RunningImage is the image this process was started from ("" for the
// installed binary).
func RunningImage() string { return os.Getenv(EnvImage) }

// Launch runs first in `hl7edge run`. When an image in dir is committed or
// on trial it execs it and does not return; it returns when this process is
// to run the gateway itself. It settles what a stop left behind: an
// interrupted download is rejected, and a trial image that was already
// started once and is starting again (it exited, crashed, was killed by the
// watchdog, or the machine restarted) is rolled back. It never leaves the
// gateway with nothing to run: whatever fails, the installed binary runs.
//
// installed is the installed binary's own version. When it differs from
// the one recorded at the update, the package was upgraded since: the
// installed binary runs and the images are dropped.
func Launch(dir, installed string, log *slog.Logger) {
	if RunningImage() != "" {
		return
	}
	st, ok, err := Load(dir)
	if err != nil {
		log.Error("firmware state unreadable; running the installed version", "err", err)
		return
	}
	if !ok {
		return
	}
	if st.Installed != "" && st.Installed != installed && (st.Good != "" || st.State.InProgress()) {
		st.Reason = fmt.Sprintf("the installed package changed from %s to %s; it runs instead of firmware version %s", st.Installed, installed, st.Version)
		switch st.State {
		case Trial:
			st.State = RolledBack // announced by the next run, like any roll-back
		case Downloading, Verifying:
			st.State = Rejected
		}
		st.Good, st.GoodVersion, st.Installed = "", installed, installed
		log.Warn("firmware images dropped: the installed package was upgraded", "installed", installed, "reason", st.Reason)
		if err := Save(nil, dir, st); err != nil {
			log.Error("firmware state not saved", "err", err)
		}
	}
	switch st.State {
	case Downloading, Verifying:
		st.Reason = fmt.Sprintf("the gateway stopped while %s version %s; nothing changed; send the command again", st.State, st.Version)
		st.State = Rejected
		log.Warn("firmware update interrupted", "version", st.Version, "reason", st.Reason)
		if err := Save(nil, dir, st); err != nil {
			log.Error("firmware state not saved", "err", err)
		}
	case Trial:
		if st.Starts == 0 {
			st.Starts = 1
			st.TrialEnds = time.Now().Add(st.Trial).UTC()
			if err := Save(nil, dir, st); err != nil {
				// Without the record a crash of the trial image could not
				// be told from its first start: do not start it.
				log.Error("firmware trial not started: state not saved", "version", st.Version, "err", err)
				break
			}
			log.Info("firmware: starting version on trial", "version", st.Version, "trial", st.Trial, "previous", st.Previous)
			err := execImage(dir, st.Image)
			st.State = RolledBack
			st.Reason = fmt.Sprintf("version %s could not be started: %v", st.Version, err)
		} else {
			st.State = RolledBack
			st.Reason = fmt.Sprintf("version %s stopped during its trial (it exited, crashed, missed the watchdog, or the gateway restarted) before the trial of %s ended", st.Version, st.Trial)
		}
		log.Error("firmware rolled back", "version", st.Version, "previous", st.GoodVersion, "reason", st.Reason)
		if err := Save(nil, dir, st); err != nil {
			log.Error("firmware state not saved", "err", err)
		}
	}
	if st.State != Trial {
		prune(dir, st.Good, log)
	}
	if st.Good == "" {
		return
	}
	log.Info("firmware: starting the committed version", "version", st.GoodVersion)
	err = execImage(dir, st.Good)
	log.Error("firmware: the committed image could not be started; running the installed version", "image", st.Good, "version", st.GoodVersion, "err", err)
}

// execImage replaces this process with an image from dir; it returns only
// on failure.
func execImage(dir, name string) error {
	if name == "" || strings.ContainsRune(name, '/') {
		return fmt.Errorf("image name %q is not a file name", name)
	}
	path := filepath.Join(dir, name)
	// Only a regular file staged in dir runs: a link planted there would
	// run whatever it points to.
	if fi, err := os.Lstat(path); err != nil {
		return err
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("image %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	args := append([]string{path}, os.Args[1:]...)
	env := append(os.Environ(), EnvImage+"="+path)
	return syscall.Exec(path, args, env)
}

// prune removes images and partial downloads other than keep.
func prune(dir, keep string, log *slog.Logger) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if n == keep || !(strings.HasPrefix(n, imagePrefix) || strings.HasPrefix(n, downloadPrefix)) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, n)); err != nil {
			log.Warn("firmware: old image not removed", "file", n, "err", err)
		}
	}
}
