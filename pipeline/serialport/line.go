package serialport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/tarm/serial"
)

// readTimeout is the port's VTIME: a read with nothing to read returns
// after this long. It is what keeps the reading goroutine responsive to its
// context, and what lets Close work: tarm/serial's Close waits for a
// pending read, which without a timeout could be forever.
const readTimeout = 100 * time.Millisecond

// errMissing says the device path does not exist (adapter unplugged).
var errMissing = errors.New("serial device missing")

// deviceError is a failure of the port itself (EIO/ENXIO when the adapter
// goes, a hang-up, the path now naming another device). The port must be
// closed and opened again.
type deviceError struct {
	op  string
	err error
}

func (e *deviceError) Error() string { return "serial port: " + e.op + ": " + e.err.Error() }
func (e *deviceError) Unwrap() error { return e.err }

// identity is what the device path resolved to when the port was opened.
type identity struct{ rdev, ino uint64 }

func identify(path string) (identity, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return identity{}, fmt.Errorf("%w: %s does not exist (adapter unplugged or path wrong)", errMissing, path)
		}
		return identity{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || fi.Mode()&fs.ModeCharDevice == 0 {
		return identity{}, fmt.Errorf("%s is not a character device: device must name a serial port such as /dev/ttyUSB0", path)
	}
	return identity{rdev: uint64(st.Rdev), ino: uint64(st.Ino)}, nil
}

// line is an open port. It turns tarm/serial's behaviour into an honest
// stream: a read timeout (0 bytes, io.EOF) is not the end, the context and
// an optional deadline are checked between reads, and a hung-up or
// vanished device becomes a *deviceError. It is used by one goroutine at a
// time.
type line struct {
	port     *serial.Port
	path     string
	id       identity
	ctx      context.Context
	deadline time.Time
	fastEOF  int // consecutive zero reads that returned well before the timeout
	beat     func()
}

func openLine(ctx context.Context, cfg *Config, beat func()) (*line, error) {
	id, err := identify(cfg.Device)
	if err != nil {
		return nil, err
	}
	p, err := serial.OpenPort(cfg.serial(readTimeout))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s vanished while opening", errMissing, cfg.Device)
		}
		return nil, fmt.Errorf("opening %s at %d baud: %w (check permissions: the service user needs the dialout group)", cfg.Device, cfg.Baud, err)
	}
	return &line{port: p, path: cfg.Device, id: id, ctx: ctx, beat: beat}, nil
}

// Read returns at least one byte, or an error: the context's, a
// deadline's (os.ErrDeadlineExceeded) or a *deviceError. It never returns
// io.EOF.
func (l *line) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		l.beat()
		if err := l.ctx.Err(); err != nil {
			return 0, err
		}
		if !l.deadline.IsZero() && !time.Now().Before(l.deadline) {
			return 0, os.ErrDeadlineExceeded
		}
		start := time.Now()
		n, err := l.port.Read(p)
		if n > 0 {
			l.fastEOF = 0
			return n, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, &deviceError{"reading " + l.path, err}
		}
		if err := l.check(time.Since(start)); err != nil {
			return 0, err
		}
	}
}

// check runs after a read returned nothing. With VMIN=0 a read returns
// nothing only when VTIME expires, so one that returns at once means the
// line hung up (a pty whose master closed, an unplugged adapter). Either
// way the path is looked at: gone or now naming another device means the
// port we hold is dead.
func (l *line) check(took time.Duration) error {
	if took < readTimeout/2 {
		l.fastEOF++
	} else {
		l.fastEOF = 0
	}
	id, err := identify(l.path)
	switch {
	case err != nil:
		return &deviceError{"watching " + l.path, err}
	case id != l.id:
		return &deviceError{"watching " + l.path, fmt.Errorf("%s now names another device (adapter replugged)", l.path)}
	case l.fastEOF >= 2:
		return &deviceError{"reading " + l.path, errors.New("line hung up (reads end at once with no data)")}
	}
	return nil
}

func (l *line) Write(p []byte) (int, error) {
	n, err := l.port.Write(p)
	if err != nil {
		return n, &deviceError{"writing " + l.path, err}
	}
	return n, nil
}

// SetReadDeadline makes Read give up at t (zero: never). It is honoured
// within readTimeout.
func (l *line) SetReadDeadline(t time.Time) error {
	l.deadline = t
	return nil
}

func (l *line) Close() error { return l.port.Close() }

// discardInput drops what the device sent and we have not read, such as
// a late answer to a request we gave up on.
func (l *line) discardInput() { _ = l.port.Flush() }
