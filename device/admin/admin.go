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
	"time"

	"github.com/hl7edge/hl7edge/device/command"
)

// maxRequest bounds one request line; commands are small.
const maxRequest = 1 << 20

// Server serves a Dispatcher on a unix socket.
type Server struct {
	path string
	d    *command.Dispatcher
	log  *slog.Logger
}

// NewServer makes a server for the socket path.
func NewServer(path string, d *command.Dispatcher, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{path: path, d: d, log: log}
}

// Run listens until ctx ends, then removes the socket.
func (s *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return fmt.Errorf("admin socket directory: %w", err)
	}
	// A socket left by a killed daemon would make Listen fail; nobody can be
	// serving it, because the spool lock already proved we are alone.
	_ = os.Remove(s.path)
	ln, err := net.Listen("unix", s.path)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w (set admin.socket to a writable path)", s.path, err)
	}
	if err := os.Chmod(s.path, 0o660); err != nil {
		_ = ln.Close()
		return fmt.Errorf("admin socket %s: %w", s.path, err)
	}
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			_ = os.Remove(s.path)
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("admin socket: %w", err)
		}
		wg.Go(func() { s.serve(ctx, c) })
	}
}

func (s *Server) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	r := bufio.NewReaderSize(c, 64<<10)
	line, err := readLine(r)
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
