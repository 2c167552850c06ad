package loopback

import (
	"fmt"
	"net"
	"os"
	"testing"
)

// TestListenBelowEphemeral: the port comes from below the kernel's
// ephemeral range, and is free once the listener is closed.
func TestListenBelowEphemeral(t *testing.T) {
	l, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	low := 0
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(b), &low)
	}
	if low-room-floor >= 1000 && (port < floor || port >= low-room) {
		t.Fatalf("port %d, want one in [%d, %d)", port, floor, low-room)
	}
	l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("port %d not free again: %v", port, err)
	}
	l2.Close()
}
