package mllp

import (
	"net"
	"testing"
	"time"
)

// A sender that connects per message closes its last connection just
// before it opens the next; the listener may not have read that end yet.
// peerClosed sees it, so the old connection does not count against the new
// one when the listener is full (found as a flake of
// TestServerIdleFloodKeepsIntakeOpen on a loaded machine: "err EOF", the
// sender's new connection refused behind its own closed one).
func TestPeerClosedSeesTheEnd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if peerClosed(server) {
		t.Fatal("an open, silent connection reads as closed")
	}
	if _, err := client.Write([]byte{0x0b}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if peerClosed(server) {
		t.Fatal("a connection with a frame under way reads as closed")
	}
	buf := make([]byte, 1)
	if _, err := server.Read(buf); err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !peerClosed(server) {
		if time.Now().After(deadline) {
			t.Fatal("a connection its sender closed does not read as closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
