package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/hl7edge/hl7edge/pipeline/mllp"
	"golang.org/x/sys/unix"
)

// The floor must answer as hl7edge does and, with -sync, keep what it
// acknowledged; otherwise it would flatter neither side.
func TestFloorAcknowledgesAndKeeps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "floor.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			serve(c, &log{f: f})
		}
	}()
	cl, err := mllp.Dial(context.Background(), ln.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	msg := []byte("MSH|^~\\&|A|B|C|D|20261130||ADT^A01|CTRL1|P|2.5.1\rPID|1||MRN1\r")
	ack, err := cl.Send(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(ack, []byte("MSA|AA|CTRL1")) {
		t.Fatalf("ACK %q, want AA for CTRL1", ack)
	}
	kept, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(kept, msg) {
		t.Fatalf("the log does not start with the acknowledged message")
	}
	ack, err = cl.Send(context.Background(), []byte("not hl7"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(ack, []byte("MSA|AR|")) {
		t.Fatalf("ACK to rubbish %q, want AR", ack)
	}
}
