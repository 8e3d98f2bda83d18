// Package admin is the local control socket: the CLI on the box talks to the
// running daemon through it with the same commands, and the same handlers,
// as a fleet operator over MQTT. One JSON request line in, one JSON response
// line out.
package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hl7edge/hl7edge/device/command"
	"github.com/hl7edge/hl7edge/pipeline/vocab/ratelog"
)

// maxRequest bounds one request line; commands are small.
const maxRequest = 1 << 20

// Limits on connections: a local process that opens many and sends
// nothing must not hold the socket (nor a goroutine each for minutes).
const (
	// maxConnections open at once. When full, the connection that has
	// waited longest without sending its request gives way; one running a
	// command never does.
	maxConnections = 16
	// requestTimeout bounds the wait for the request line, and
	// answerTimeout the write of the answer.
	requestTimeout = 10 * time.Second
	answerTimeout  = 10 * time.Second
)

// Server serves a Dispatcher on a unix socket.
type Server struct {
	path string
	d    *command.Dispatcher
	log  *slog.Logger

	mu      sync.Mutex
	open    int
	waiting map[net.Conn]time.Time // connections still reading their request, since
}

// NewServer makes a server for the socket path.
func NewServer(path string, d *command.Dispatcher, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{path: path, d: d, log: ratelog.Logger(log, time.Second, 5), waiting: map[net.Conn]time.Time{}}
}

// Run listens until ctx ends, then removes the socket.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return fmt.Errorf("admin socket directory: %w", err)
	}
	// A socket left by a killed daemon would make Listen fail. Only such a
	// one goes: whatever else is at the path (a file admin.socket was
	// pointed at, such as the replay record) is not ours to delete.
	if err := clearStale(s.path); err != nil {
		return fmt.Errorf("admin socket %s: %w", s.path, err)
	}
	ln, err := net.Listen("unix", s.path)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w (set admin.socket to a writable path)", s.path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // removeOwn does it, if the path is still ours
	own, err := os.Lstat(s.path)
	if err == nil {
		err = os.Chmod(s.path, 0o660)
	}
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("admin socket %s: %w", s.path, err)
	}
	defer removeOwn(s.path, own)
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("admin socket: %w", err)
		}
		if !s.admit(c) {
			_ = c.Close()
			continue
		}
		wg.Go(func() { s.serve(ctx, c) })
	}
}

// clearStale removes a socket at path that nobody answers on; it refuses
// anything else that is there.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("a %s is there, not a socket; it is left as it is: set admin.socket to a path of its own", kindOf(fi))
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		_ = c.Close()
		return errors.New("another process answers on it: stop it, or set admin.socket to another path")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether another process serves it (%w); remove it if none does", err)
	}
	return os.Remove(path)
}

func kindOf(fi os.FileInfo) string {
	switch t := fi.Mode().Type(); {
	case t == 0:
		return "regular file"
	case t&os.ModeDir != 0:
		return "directory"
	case t&os.ModeSymlink != 0:
		return "symbolic link"
	}
	return "special file"
}

// removeOwn removes path at stop only if it is still the socket this
// server made (own), not a file that took its place.
func removeOwn(path string, own os.FileInfo) {
	if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, own) {
		_ = os.Remove(path)
	}
}

// admit counts a new connection in, making room when full by closing the
// connection that has waited longest for its request; with every slot
// running a command the new one is refused.
func (s *Server) admit(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open >= maxConnections {
		var oldest net.Conn
		var since time.Time
		for w, t := range s.waiting {
			if oldest == nil || t.Before(since) {
				oldest, since = w, t
			}
		}
		if oldest == nil {
			s.log.Warn("admin connection refused: every connection is running a command", "max_connections", maxConnections)
			return false
		}
		delete(s.waiting, oldest)
		_ = oldest.Close() // its serve sees the error and releases its slot
		s.log.Warn("admin connection closed to make room: it had sent no request", "waited", time.Since(since).Round(time.Millisecond))
	}
	s.open++
	s.waiting[c] = time.Now()
	return true
}

// started marks c as past its request; it may no longer be evicted.
func (s *Server) started(c net.Conn) {
	s.mu.Lock()
	delete(s.waiting, c)
	s.mu.Unlock()
}

func (s *Server) release(c net.Conn) {
	s.mu.Lock()
	delete(s.waiting, c)
	s.open--
	s.mu.Unlock()
}

func (s *Server) serve(ctx context.Context, c net.Conn) {
	defer s.release(c)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(requestTimeout))
	r := bufio.NewReaderSize(c, 64<<10)
	line, err := readLine(r)
	s.started(c)
	if err != nil {
		return
	}
	var req command.Request
	var resp command.Response
	if err := json.Unmarshal(line, &req); err != nil {
		resp = command.Response{Status: command.Rejected, Detail: fmt.Sprintf("request is not JSON: %v", err)}
	} else {
		s.log.Info("admin command", "id", req.ID, "name", req.Name)
		// Only someone on the box reaches this socket: a local operator.
		resp = s.d.Dispatch(command.WithLocal(ctx), req)
	}
	b, _ := json.Marshal(resp)
	_ = c.SetWriteDeadline(time.Now().Add(answerTimeout))
	_, _ = c.Write(append(b, '\n'))
}

func readLine(r *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		chunk, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		out = append(out, chunk...)
		if len(out) > maxRequest {
			return nil, errors.New("request too long")
		}
		if !isPrefix {
			return out, nil
		}
	}
}

// ErrNoDaemon means nothing listens on the socket.
var ErrNoDaemon = errors.New("the hl7edge daemon is not running (nothing listens on the admin socket)")

// Call sends one request to a running daemon.
func Call(ctx context.Context, path string, req command.Request) (command.Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return command.Response{}, fmt.Errorf("%w: %s: %v", ErrNoDaemon, path, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return command.Response{}, err
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		return command.Response{}, fmt.Errorf("admin socket %s: %w", path, err)
	}
	line, err := readLine(bufio.NewReader(c))
	if err != nil {
		return command.Response{}, fmt.Errorf("admin socket %s: no answer: %w", path, err)
	}
	var resp command.Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return command.Response{}, fmt.Errorf("admin socket %s: bad answer: %w", path, err)
	}
	return resp, nil
}
