package tpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
)

// Open connects to a TPM named by spec: a device path ("/dev/tpmrm0") or
// "tcp:HOST:PORT", the command port of a swtpm server started with
// "swtpm socket --tpm2 --server type=tcp,port=PORT --flags
// not-need-init,startup-clear". The caller closes it.
func Open(spec string) (io.ReadWriteCloser, error) {
	if addr, ok := strings.CutPrefix(spec, "tcp:"); ok {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("tpm: connecting to swtpm at %s: %w", addr, err)
		}
		return &framedConn{conn: conn}, nil
	}
	rwc, err := tpm2.OpenTPM(spec)
	if err != nil {
		return nil, fmt.Errorf("tpm: opening %s: %w", spec, err)
	}
	return rwc, nil
}

// maxResponse bounds one TPM response (TPM 2.0 responses are far smaller).
const maxResponse = 64 << 10

// framedConn makes a TCP stream behave like a TPM character device: each
// Read returns one whole response, which is what go-tpm expects (a device
// read never returns half a response; a socket read may).
type framedConn struct {
	mu   sync.Mutex
	conn net.Conn
	buf  []byte
}

func (f *framedConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return 0, err
	}
	return f.conn.Write(p)
}

func (f *framedConn) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.buf) == 0 {
		hdr := make([]byte, 10)
		if _, err := io.ReadFull(f.conn, hdr); err != nil {
			return 0, fmt.Errorf("tpm: reading response header: %w", err)
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < 10 || size > maxResponse {
			return 0, fmt.Errorf("tpm: response size %d out of range", size)
		}
		resp := make([]byte, size)
		copy(resp, hdr)
		if _, err := io.ReadFull(f.conn, resp[10:]); err != nil {
			return 0, fmt.Errorf("tpm: reading response body: %w", err)
		}
		f.buf = resp
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

func (f *framedConn) Close() error { return f.conn.Close() }
