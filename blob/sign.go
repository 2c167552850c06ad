package blob

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
)

// signingClient signs every request with a principal's key
// (protocol.BlobRequestMessage), for Cloister stores' push authentication.
type signingClient struct {
	hc  *http.Client
	key ed25519.PrivateKey
	now func() time.Time
}

func (c *signingClient) Do(req *http.Request) (*http.Response, error) {
	req.Header.Set("Authorization", SignRequest(c.key, req.Method, req.URL.Host, req.URL.RequestURI(), c.now()))
	return c.hc.Do(req)
}

// SignRequest returns the Authorization header value that authenticates
// one request to a Cloister store.
func SignRequest(key ed25519.PrivateKey, method, host, requestURI string, now time.Time) string {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	ms := now.UnixMilli()
	sig := ed25519.Sign(key, protocol.BlobRequestMessage(method, host, requestURI, ms, nonce))
	return fmt.Sprintf("%s key=%s, t=%d, nonce=%s, sig=%s", protocol.BlobAuthScheme,
		keys.FormatSigningKey(key.Public().(ed25519.PublicKey)), ms, hex.EncodeToString(nonce), base64.StdEncoding.EncodeToString(sig))
}

// SignedRequest is a parsed, verified Authorization header.
type SignedRequest struct {
	Key   ed25519.PublicKey
	Time  time.Time
	Nonce string // hex
}

// ErrSignature marks an Authorization header that is malformed or whose
// signature does not verify.
var ErrSignature = errors.New("bad request signature")

// VerifyRequest parses header and checks its signature over the request.
// It does not judge the time or the nonce: the server does (freshness and
// replay depend on its clock and memory).
func VerifyRequest(header, method, host, requestURI string) (*SignedRequest, error) {
	rest, ok := strings.CutPrefix(header, protocol.BlobAuthScheme+" ")
	if !ok {
		return nil, fmt.Errorf("%w: want the %s scheme", ErrSignature, protocol.BlobAuthScheme)
	}
	if len(rest) > 512 {
		return nil, fmt.Errorf("%w: header too long", ErrSignature)
	}
	f := map[string]string{}
	for _, part := range strings.Split(rest, ", ") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || f[k] != "" {
			return nil, fmt.Errorf("%w: malformed parameter %q", ErrSignature, truncate(part))
		}
		f[k] = v
	}
	if len(f) != 4 {
		return nil, fmt.Errorf("%w: want exactly key, t, nonce and sig", ErrSignature)
	}
	pub, err := keys.ParseSigningKey(f["key"])
	if err != nil {
		return nil, fmt.Errorf("%w: key: %v", ErrSignature, err)
	}
	ms, err := strconv.ParseInt(f["t"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: t is not a number", ErrSignature)
	}
	nonce, err := hex.DecodeString(f["nonce"])
	if err != nil || len(nonce) < 16 || len(nonce) > 32 {
		return nil, fmt.Errorf("%w: nonce must be 16 to 32 bytes of hex", ErrSignature)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(f["sig"])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: sig is not a base64 Ed25519 signature", ErrSignature)
	}
	if !ed25519.Verify(pub, protocol.BlobRequestMessage(method, host, requestURI, ms, nonce), sig) {
		return nil, fmt.Errorf("%w: signature does not verify for %s %s", ErrSignature, method, truncate(requestURI))
	}
	return &SignedRequest{Key: pub, Time: time.UnixMilli(ms), Nonce: f["nonce"]}, nil
}
