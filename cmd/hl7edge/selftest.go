package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/storage"
)

// cmdSelftest proves on the target itself (or under qemu) that the spool
// keeps messages across a close and reopen, and that MLLP works on loopback.
func cmdSelftest(ctx context.Context, stdout io.Writer) error {
	fmt.Fprintf(stdout, "hl7edge %s selftest on %s/%s\n", version, runtime.GOOS, runtime.GOARCH)
	dir, err := os.MkdirTemp("", "hl7edge-selftest-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := storage.Config{Dir: dir, MaxBytes: 64 << 20}
	sp, err := storage.Open(cfg, storage.Options{Destinations: []string{"selftest"}})
	if err != nil {
		fmt.Fprintf(stdout, "spool: FAIL: %v\n", err)
		return err
	}
	const n = 100
	for i := range n {
		raw := fmt.Appendf(nil, "MSH|^~\\&|SELF|TEST|SELF|TEST|20260101000000||ADT^A01|ST%04d|T|2.5.1\rEVN|A01\r", i)
		if _, err := sp.Append(ctx, storage.Entry{Source: "selftest", Raw: raw, Dests: []string{"selftest"}}); err != nil {
			sp.Close()
			return fmt.Errorf("spool write: %w", err)
		}
	}
	if err := sp.Close(); err != nil {
		return err
	}
	sp, err = storage.Open(cfg, storage.Options{Destinations: []string{"selftest"}})
	if err != nil {
		return fmt.Errorf("spool reopen: %w", err)
	}
	ms, err := sp.Next("selftest", 0, 1000)
	sp.Close()
	if err != nil || len(ms) != n || !bytes.Contains(ms[n-1].Raw, []byte("ST0099")) {
		return fmt.Errorf("spool read back %d of %d messages (%v)", len(ms), n, err)
	}
	fmt.Fprintf(stdout, "spool: OK (%d messages written, closed, reopened and read back in order)\n", n)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("mllp listen: %w", err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := mllp.NewReader(c, 1<<20)
		if f, err := r.ReadFrame(); err == nil {
			_ = mllp.WriteFrame(c, f.Data)
		}
	}()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := mllp.Dial(cctx, ln.Addr().String(), nil)
	if err != nil {
		return fmt.Errorf("mllp dial: %w", err)
	}
	defer c.Close()
	msg := []byte("MSH|^~\\&|SELF|TEST|SELF|TEST|20260101000000||ADT^A01|ECHO1|T|2.5.1\r")
	echo, err := c.Send(cctx, msg)
	if err != nil || !bytes.Equal(echo, msg) {
		return fmt.Errorf("mllp round trip: %v", err)
	}
	fmt.Fprintln(stdout, "mllp: OK (loopback round trip)")
	fmt.Fprintln(stdout, "selftest: PASS")
	return nil
}
