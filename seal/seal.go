package seal

import (
	"bytes"
	"crypto/hpke"
	"encoding/binary"
	"errors"
	"fmt"
)

// HPKE algorithm identifiers of the one suite this version writes and reads
// (RFC 9180 section 7 and draft-ietf-hpke-pq).
const (
	KEMID  uint16 = 0x647a // MLKEM768-X25519
	KDFID  uint16 = 0x0001 // HKDF-SHA256
	AEADID uint16 = 0x0002 // AES-256-GCM
)

// Envelope layout constants; see docs/keys.md "Sealed envelopes".
const (
	// Magic starts every envelope, so that a file or message can be
	// recognised without trying to decrypt it.
	Magic = "CLSE"
	// Version is the envelope format version this package writes.
	Version byte = 1
	// HeaderSize is the fixed-size part before the encapsulated key:
	// magic, version, KEM, KDF and AEAD ids, encapsulated key length.
	HeaderSize = 4 + 1 + 2 + 2 + 2 + 2
	// EncSize is the size of an MLKEM768-X25519 encapsulated key.
	EncSize = 1120
	// Overhead is how many bytes Seal adds to a plaintext.
	Overhead = HeaderSize + EncSize + 16
	// MaxInfoSize bounds the domain-separation string; HPKE itself limits
	// info to 64 KiB in the labeled KDF.
	MaxInfoSize = 4096
)

// infoLabel prefixes the caller's info so that a sealing key used by this
// package never decrypts HPKE messages made for another protocol with the
// same key, even if that protocol picked the same info bytes.
const infoLabel = "cloister/seal/v1\x00"

// Errors callers tell apart with errors.Is. Every failure of Open wraps
// ErrOpen; malformed and unsupported envelopes also wrap ErrMalformed or
// ErrUnsupported, so "could not open" is one check and the reason a second.
var (
	// ErrOpen: the envelope could not be opened. Wrong recipient key, a
	// modified byte anywhere, or a different info or aad all look the same
	// by design: the AEAD tag does not say which.
	ErrOpen = errors.New("seal: cannot open envelope")
	// ErrMalformed: the bytes are not an envelope (truncated, bad magic,
	// wrong encapsulated key length).
	ErrMalformed = errors.New("seal: malformed envelope")
	// ErrUnsupported: the envelope or key uses a format version or cipher
	// suite this version does not implement.
	ErrUnsupported = errors.New("seal: unsupported suite")
)

// KEM returns the key encapsulation mechanism recipients' keys belong to.
func KEM() hpke.KEM { return hpke.MLKEM768X25519() }

// GenerateKey returns a fresh recipient key pair of the supported KEM.
func GenerateKey() (hpke.PrivateKey, error) {
	k, err := KEM().GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("seal: generating key: %w", err)
	}
	return k, nil
}

func header(encLen int) []byte {
	h := make([]byte, 0, HeaderSize)
	h = append(h, Magic...)
	h = append(h, Version)
	h = binary.BigEndian.AppendUint16(h, KEMID)
	h = binary.BigEndian.AppendUint16(h, KDFID)
	h = binary.BigEndian.AppendUint16(h, AEADID)
	h = binary.BigEndian.AppendUint16(h, uint16(encLen))
	return h
}

func hpkeInfo(info []byte) ([]byte, error) {
	if len(info) > MaxInfoSize {
		return nil, fmt.Errorf("info is %d bytes, at most %d allowed", len(info), MaxInfoSize)
	}
	return append([]byte(infoLabel), info...), nil
}

// aeadAAD binds the header to the ciphertext: changing the suite ids or
// version of a stored envelope makes it fail to open rather than be read
// under different rules.
func aeadAAD(hdr, aad []byte) []byte {
	out := make([]byte, 0, len(hdr)+len(aad))
	return append(append(out, hdr...), aad...)
}

// Seal encrypts plaintext to recipient. info names what the message is
// for (e.g. "cloister/v1/input\x00<session>\x00<name>") and aad is further
// data it is bound to without being encrypted; Open must be given the same
// info and aad. Each call uses fresh randomness, so sealing the same
// plaintext twice gives different envelopes.
func Seal(recipient hpke.PublicKey, plaintext, info, aad []byte) ([]byte, error) {
	if recipient == nil {
		return nil, errors.New("seal: no recipient key")
	}
	if id := recipient.KEM().ID(); id != KEMID {
		return nil, fmt.Errorf("%w: recipient key uses KEM %#04x, only %#04x (MLKEM768-X25519) is supported", ErrUnsupported, id, KEMID)
	}
	hinfo, err := hpkeInfo(info)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	enc, sender, err := hpke.NewSender(recipient, hpke.HKDFSHA256(), hpke.AES256GCM(), hinfo)
	if err != nil {
		return nil, fmt.Errorf("seal: encapsulating to recipient: %w", err)
	}
	if len(enc) != EncSize {
		return nil, fmt.Errorf("seal: encapsulated key is %d bytes, expected %d", len(enc), EncSize)
	}
	hdr := header(len(enc))
	ct, err := sender.Seal(aeadAAD(hdr, aad), plaintext)
	if err != nil {
		return nil, fmt.Errorf("seal: encrypting: %w", err)
	}
	out := make([]byte, 0, len(hdr)+len(enc)+len(ct))
	out = append(out, hdr...)
	out = append(out, enc...)
	return append(out, ct...), nil
}

// Open decrypts an envelope made by Seal for recipient's public key with the
// same info and aad. Every failure wraps ErrOpen.
func Open(recipient hpke.PrivateKey, envelope, info, aad []byte) ([]byte, error) {
	if recipient == nil {
		return nil, fmt.Errorf("%w: no recipient key", ErrOpen)
	}
	enc, ct, err := split(envelope)
	if err != nil {
		return nil, err
	}
	if id := recipient.KEM().ID(); id != KEMID {
		return nil, fmt.Errorf("%w: %w: recipient key uses KEM %#04x", ErrOpen, ErrUnsupported, id)
	}
	hinfo, err := hpkeInfo(info)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOpen, err)
	}
	r, err := hpke.NewRecipient(enc, recipient, hpke.HKDFSHA256(), hpke.AES256GCM(), hinfo)
	if err != nil {
		return nil, fmt.Errorf("%w: decapsulating: %v", ErrOpen, err)
	}
	pt, err := r.Open(aeadAAD(envelope[:HeaderSize], aad), ct)
	if err != nil {
		return nil, fmt.Errorf("%w: wrong recipient key, wrong info or aad, or the envelope was modified", ErrOpen)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// split checks the header and returns the encapsulated key and ciphertext.
func split(envelope []byte) (enc, ct []byte, err error) {
	if len(envelope) < HeaderSize {
		return nil, nil, fmt.Errorf("%w: %w: %d bytes, shorter than the %d-byte header", ErrOpen, ErrMalformed, len(envelope), HeaderSize)
	}
	if !bytes.Equal(envelope[:4], []byte(Magic)) {
		return nil, nil, fmt.Errorf("%w: %w: does not start with %q", ErrOpen, ErrMalformed, Magic)
	}
	if v := envelope[4]; v != Version {
		return nil, nil, fmt.Errorf("%w: %w: envelope format version %d, this version reads %d", ErrOpen, ErrUnsupported, v, Version)
	}
	kem := binary.BigEndian.Uint16(envelope[5:])
	kdf := binary.BigEndian.Uint16(envelope[7:])
	aead := binary.BigEndian.Uint16(envelope[9:])
	if kem != KEMID || kdf != KDFID || aead != AEADID {
		return nil, nil, fmt.Errorf("%w: %w: suite KEM %#04x KDF %#04x AEAD %#04x, this version reads KEM %#04x KDF %#04x AEAD %#04x",
			ErrOpen, ErrUnsupported, kem, kdf, aead, KEMID, KDFID, AEADID)
	}
	encLen := int(binary.BigEndian.Uint16(envelope[11:]))
	if encLen != EncSize {
		return nil, nil, fmt.Errorf("%w: %w: encapsulated key length %d, expected %d", ErrOpen, ErrMalformed, encLen, EncSize)
	}
	rest := envelope[HeaderSize:]
	if len(rest) < encLen+16 {
		return nil, nil, fmt.Errorf("%w: %w: truncated (%d bytes after the header, at least %d needed)", ErrOpen, ErrMalformed, len(rest), encLen+16)
	}
	return rest[:encLen], rest[encLen:], nil
}

// MarshalPublicKey encodes a recipient public key as its two-byte KEM
// identifier (big-endian) followed by the KEM's serialized public key. This
// is the byte string behind the "hpke:" text form of package keys and what
// a session binds into its attestation report data.
func MarshalPublicKey(pub hpke.PublicKey) []byte {
	b := pub.Bytes()
	out := make([]byte, 0, 2+len(b))
	out = binary.BigEndian.AppendUint16(out, pub.KEM().ID())
	return append(out, b...)
}

// ParsePublicKey decodes the output of MarshalPublicKey, refusing KEMs other
// than the supported one.
func ParsePublicKey(b []byte) (hpke.PublicKey, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: public key is %d bytes, too short to hold a KEM id", ErrMalformed, len(b))
	}
	if id := binary.BigEndian.Uint16(b); id != KEMID {
		return nil, fmt.Errorf("%w: public key is for KEM %#04x, only %#04x (MLKEM768-X25519) is supported", ErrUnsupported, id, KEMID)
	}
	pub, err := KEM().NewPublicKey(b[2:])
	if err != nil {
		return nil, fmt.Errorf("%w: MLKEM768-X25519 public key: %v", ErrMalformed, err)
	}
	return pub, nil
}

// MarshalPrivateKey encodes a recipient private key like MarshalPublicKey:
// KEM id, then the KEM's serialized private key (for MLKEM768-X25519 a
// 32-byte seed).
func MarshalPrivateKey(priv hpke.PrivateKey) ([]byte, error) {
	b, err := priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("seal: serializing private key: %w", err)
	}
	out := make([]byte, 0, 2+len(b))
	out = binary.BigEndian.AppendUint16(out, priv.KEM().ID())
	return append(out, b...), nil
}

// ParsePrivateKey decodes the output of MarshalPrivateKey.
func ParsePrivateKey(b []byte) (hpke.PrivateKey, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: private key is %d bytes, too short to hold a KEM id", ErrMalformed, len(b))
	}
	if id := binary.BigEndian.Uint16(b); id != KEMID {
		return nil, fmt.Errorf("%w: private key is for KEM %#04x, only %#04x (MLKEM768-X25519) is supported", ErrUnsupported, id, KEMID)
	}
	priv, err := KEM().NewPrivateKey(b[2:])
	if err != nil {
		return nil, fmt.Errorf("%w: MLKEM768-X25519 private key: %v", ErrMalformed, err)
	}
	return priv, nil
}
