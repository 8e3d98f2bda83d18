// Command floor is the least a server that keeps an ACK's promise can do,
// for BenchmarkVersusPeer (cmd/hl7edge) to put hl7edge beside: hl7edge's
// own MLLP framing, parser and ACK builder, and, with -sync, each message
// written into a preallocated file and fdatasynced before its ACK. No
// spool, no queue, no index: what is left over in hl7edge's figures beyond
// this is the cost of being a spool.
//
//	floor -listen 127.0.0.1:2575 [-sync FILE]
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hl7edge/hl7edge/pipeline/hl7"
	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"github.com/hl7edge/hl7edge/pipeline/vocab/flow"
	"golang.org/x/sys/unix"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2575", "address to answer on")
	syncPath := flag.String("sync", "", "file to append each message to, fdatasynced before its ACK")
	flag.Parse()
	if err := run(*listen, *syncPath); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

// log is the file every message goes into, one writer at a time, at the
// next offset; its blocks are allocated up front so a sync carries no size
// change.
type log struct {
	mu  sync.Mutex
	f   *os.File
	off int64
}

func (l *log) append(b []byte) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.f.WriteAt(b, l.off); err != nil {
		return err
	}
	l.off += int64(len(b))
	return unix.Fdatasync(int(l.f.Fd()))
}

func run(addr, syncPath string) error {
	var l *log
	if syncPath != "" {
		f, err := os.Create(syncPath)
		if err != nil {
			return err
		}
		if err := unix.Fallocate(int(f.Fd()), 0, 0, 1<<30); err != nil {
			return err
		}
		l = &log{f: f}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go serve(c, l)
	}
}

func serve(c net.Conn, l *log) {
	defer c.Close()
	r := mllp.NewReader(c, 0)
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return
		}
		ack := hl7.ACKUnparsed(f.Data, flow.Rejected, 0, "not HL7", "", time.Now())
		if m, err := hl7.Parse(f.Data); err == nil {
			code := flow.Accepted
			if l.append(f.Data) != nil {
				code = flow.RetryLater
			}
			ack = hl7.ACK(m, code, 0, "", "", time.Now())
		}
		if err := mllp.WriteFrame(c, ack); err != nil {
			return
		}
	}
}
