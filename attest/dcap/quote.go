package dcap

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
)

// Sizes and codes from Intel's DCAP quote library (quote format v3, v4, v5).
const (
	HeaderSize        = 48
	EnclaveReportSize = 384 // SGX REPORTBODY, also the QE report
	TD10ReportSize    = 584 // TDX 1.0 TD report body
	TD15ReportSize    = 648 // TDX 1.5 TD report body

	AttKeyECDSAP256 = 2
	AttKeyECDSAP384 = 3

	TEETypeSGX uint32 = 0x00000000
	TEETypeTDX uint32 = 0x00000081

	// Body types of quote v5.
	BodySGX  = 1
	BodyTD10 = 2
	BodyTD15 = 3

	// Certification data types.
	CertDataPCKChain = 5 // PEM: PCK leaf, intermediate CA, root CA
	CertDataQEReport = 6 // QE report certification data wrapping type 5

	// maxQuote bounds what ParseQuote accepts: real quotes are ~5 KB.
	maxQuote = 1 << 20
)

// QEVendorIntel is the QE vendor ID of Intel's quoting enclaves.
var QEVendorIntel = []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// ErrFormat marks a quote or collateral that does not parse.
var ErrFormat = errors.New("malformed DCAP structure")

// EnclaveReport is an SGX report body: the ISV enclave report of an SGX
// quote, or the quoting enclave's own report.
type EnclaveReport struct {
	Raw        []byte // the 384 bytes
	CPUSVN     [16]byte
	MiscSelect uint32
	Attributes [16]byte // flags (u64 LE) then XFRM (u64 LE)
	MRENCLAVE  [32]byte
	MRSIGNER   [32]byte
	ISVProdID  uint16
	ISVSVN     uint16
	ReportData [64]byte
}

// Flags returns the SGX attributes' flags word.
func (r *EnclaveReport) Flags() uint64 { return binary.LittleEndian.Uint64(r.Attributes[:8]) }

// Debug reports the DEBUG attribute (flags bit 1).
func (r *EnclaveReport) Debug() bool { return r.Flags()&0x2 != 0 }

// TDReport is a TDX TD report body (TDX 1.0, or 1.5 with the two extra
// fields).
type TDReport struct {
	Raw            []byte
	TEETCBSVN      [16]byte
	MRSEAM         [48]byte
	MRSIGNERSEAM   [48]byte
	SEAMAttributes [8]byte
	TDAttributes   [8]byte
	XFAM           [8]byte
	MRTD           [48]byte
	MRCONFIGID     [48]byte
	MROWNER        [48]byte
	MROWNERCONFIG  [48]byte
	RTMR           [4][48]byte
	ReportData     [64]byte
	// TDX 1.5 only.
	TEETCBSVN2  [16]byte
	MRSERVICETD [48]byte
	TD15        bool
}

// Debug reports TD attribute DEBUG (bit 0): the host can read and change
// the TD's memory.
func (r *TDReport) Debug() bool { return r.TDAttributes[0]&0x1 != 0 }

// Quote is a parsed DCAP quote. Nothing in it has been verified.
type Quote struct {
	Version    uint16
	AttKeyType uint16
	TEEType    uint32
	QESVN      uint16 // header field, v3 only
	PCESVN     uint16 // header field, v3 only
	QEVendorID [16]byte
	UserData   [20]byte

	BodyType uint16 // BodySGX, BodyTD10 or BodyTD15
	SGX      *EnclaveReport
	TD       *TDReport

	// SignedData is what the attestation key signed: header and body (v5:
	// with the body descriptor).
	SignedData []byte

	Signature    [64]byte // ECDSA P-256 r||s by the attestation key
	AttestKey    [64]byte // attestation public key X||Y
	QEReport     *EnclaveReport
	QEReportSig  [64]byte // by the PCK
	QEAuthData   []byte
	CertDataType uint16
	CertData     []byte
	// Trailing counts unsigned bytes after the quote, which are ignored.
	Trailing int
	// PCKChain is the certificate chain from certification data type 5,
	// leaf first. It is untrusted until verified.
	PCKChain []*x509.Certificate
}

// IsTDX reports whether the quote is from a TD.
func (q *Quote) IsTDX() bool { return q.TEEType == TEETypeTDX }

// ReportData returns the 64 bytes the attester bound.
func (q *Quote) ReportData() []byte {
	if q.TD != nil {
		return q.TD.ReportData[:]
	}
	return q.SGX.ReportData[:]
}

type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = fmt.Errorf("%w: quote truncated reading %s at offset %d (need %d bytes, %d left)", ErrFormat, what, r.off, n, len(r.b)-r.off)
		return nil
	}
	out := r.b[r.off : r.off+n]
	r.off += n
	return out
}

func (r *reader) u16(what string) uint16 {
	b := r.take(2, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *reader) u32(what string) uint32 {
	b := r.take(4, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// Sniff reports whether data starts like a DCAP quote (version 3–5,
// ECDSA attestation key, SGX or TDX TEE type, Intel QE vendor).
func Sniff(data []byte) bool {
	if len(data) < HeaderSize {
		return false
	}
	v := binary.LittleEndian.Uint16(data)
	kt := binary.LittleEndian.Uint16(data[2:])
	tee := binary.LittleEndian.Uint32(data[4:])
	if v < 3 || v > 5 || (kt != AttKeyECDSAP256 && kt != AttKeyECDSAP384) {
		return false
	}
	if v == 3 && tee != 0 {
		// v3 has no TEE type: bytes 4..8 are reserved zero.
		return false
	}
	if tee != TEETypeSGX && tee != TEETypeTDX {
		return false
	}
	return bytes.Equal(data[12:28], QEVendorIntel)
}

// ParseQuote parses a DCAP quote of version 3 (SGX), 4 (SGX or TDX 1.0) or
// 5 (SGX, TDX 1.0 or 1.5). Trailing bytes after the signature data are an
// error.
func ParseQuote(b []byte) (*Quote, error) {
	if len(b) > maxQuote {
		return nil, fmt.Errorf("%w: quote is %d bytes, limit %d", ErrFormat, len(b), maxQuote)
	}
	r := &reader{b: b}
	q := &Quote{}
	hdr := r.take(HeaderSize, "header")
	if hdr == nil {
		return nil, r.err
	}
	q.Version = binary.LittleEndian.Uint16(hdr[0:])
	q.AttKeyType = binary.LittleEndian.Uint16(hdr[2:])
	q.TEEType = binary.LittleEndian.Uint32(hdr[4:])
	q.QESVN = binary.LittleEndian.Uint16(hdr[8:])
	q.PCESVN = binary.LittleEndian.Uint16(hdr[10:])
	copy(q.QEVendorID[:], hdr[12:28])
	copy(q.UserData[:], hdr[28:48])
	if q.AttKeyType != AttKeyECDSAP256 {
		return nil, fmt.Errorf("%w: attestation key type %d, only ECDSA-P256 (2) is supported", ErrFormat, q.AttKeyType)
	}
	switch q.Version {
	case 3:
		if q.TEEType != 0 {
			return nil, fmt.Errorf("%w: quote v3 with non-zero reserved field 0x%x", ErrFormat, q.TEEType)
		}
		q.BodyType = BodySGX
	case 4:
		switch q.TEEType {
		case TEETypeSGX:
			q.BodyType = BodySGX
		case TEETypeTDX:
			q.BodyType = BodyTD10
		default:
			return nil, fmt.Errorf("%w: TEE type 0x%x", ErrFormat, q.TEEType)
		}
	case 5:
		q.BodyType = r.u16("body type")
		size := r.u32("body size")
		if r.err != nil {
			return nil, r.err
		}
		want := map[uint16]uint32{BodySGX: EnclaveReportSize, BodyTD10: TD10ReportSize, BodyTD15: TD15ReportSize}[q.BodyType]
		if want == 0 || size != want {
			return nil, fmt.Errorf("%w: quote v5 body type %d with size %d", ErrFormat, q.BodyType, size)
		}
		if (q.BodyType == BodySGX) != (q.TEEType == TEETypeSGX) || (q.TEEType != TEETypeSGX && q.TEEType != TEETypeTDX) {
			return nil, fmt.Errorf("%w: quote v5 body type %d does not fit TEE type 0x%x", ErrFormat, q.BodyType, q.TEEType)
		}
	default:
		return nil, fmt.Errorf("%w: quote version %d, want 3, 4 or 5", ErrFormat, q.Version)
	}
	switch q.BodyType {
	case BodySGX:
		q.SGX = parseEnclaveReport(r.take(EnclaveReportSize, "enclave report"))
	case BodyTD10:
		q.TD = parseTDReport(r.take(TD10ReportSize, "TD report"))
	case BodyTD15:
		q.TD = parseTDReport(r.take(TD15ReportSize, "TD 1.5 report"))
	}
	if r.err != nil {
		return nil, r.err
	}
	q.SignedData = b[:r.off]
	sigLen := r.u32("signature data length")
	if r.err != nil {
		return nil, r.err
	}
	if int(sigLen) > len(b)-r.off {
		return nil, fmt.Errorf("%w: signature data length %d, but only %d bytes follow", ErrFormat, sigLen, len(b)-r.off)
	}
	end := r.off + int(sigLen)
	r.b = b[:end]
	copy(q.Signature[:], r.take(64, "quote signature"))
	copy(q.AttestKey[:], r.take(64, "attestation key"))
	if r.err != nil {
		return nil, r.err
	}
	if q.Version == 3 {
		if err := q.parseQEReportCertData(r); err != nil {
			return nil, err
		}
	} else {
		typ := r.u16("certification data type")
		size := r.u32("certification data size")
		body := r.take(int(size), "certification data")
		if r.err != nil {
			return nil, r.err
		}
		if typ != CertDataQEReport {
			return nil, fmt.Errorf("%w: quote v%d certification data type %d, want %d (QE report)", ErrFormat, q.Version, typ, CertDataQEReport)
		}
		inner := &reader{b: body}
		if err := q.parseQEReportCertData(inner); err != nil {
			return nil, err
		}
		if inner.off != len(body) {
			return nil, fmt.Errorf("%w: %d trailing bytes in QE report certification data", ErrFormat, len(body)-inner.off)
		}
	}
	if r.off != end {
		return nil, fmt.Errorf("%w: %d unused bytes in the signature data", ErrFormat, end-r.off)
	}
	// Quoting libraries hand out fixed-size buffers, and some test quotes
	// carry notes after the end: bytes after the signature data are not
	// signed, so they are ignored (and counted, for a warning).
	q.Trailing = len(b) - end
	return q, nil
}

// parseQEReportCertData reads QE report, its signature, QE authentication
// data and the PCK certification data.
func (q *Quote) parseQEReportCertData(r *reader) error {
	q.QEReport = parseEnclaveReport(r.take(EnclaveReportSize, "QE report"))
	copy(q.QEReportSig[:], r.take(64, "QE report signature"))
	authLen := r.u16("QE authentication data size")
	q.QEAuthData = r.take(int(authLen), "QE authentication data")
	q.CertDataType = r.u16("PCK certification data type")
	size := r.u32("PCK certification data size")
	q.CertData = r.take(int(size), "PCK certification data")
	if r.err != nil {
		return r.err
	}
	if q.CertDataType != CertDataPCKChain {
		return fmt.Errorf("%w: PCK certification data type %d; only %d (PEM chain in the quote) can be verified offline", ErrFormat, q.CertDataType, CertDataPCKChain)
	}
	chain, err := parsePEMChain(q.CertData)
	if err != nil {
		return fmt.Errorf("%w: PCK chain in the quote: %v", ErrFormat, err)
	}
	if len(chain) < 2 {
		return fmt.Errorf("%w: PCK chain in the quote has %d certificates, want leaf, intermediate and root", ErrFormat, len(chain))
	}
	q.PCKChain = chain
	return nil
}

// parsePEMChain parses concatenated PEM certificates; trailing NULs and
// white space (some quoting libraries pad) are allowed.
func parsePEMChain(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block of type %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", len(out), err)
		}
		out = append(out, c)
	}
	if len(bytes.Trim(rest, "\x00 \t\r\n")) != 0 {
		return nil, fmt.Errorf("%d bytes that are not PEM certificates", len(rest))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no certificates")
	}
	return out, nil
}

func parseEnclaveReport(b []byte) *EnclaveReport {
	if b == nil {
		return nil
	}
	r := &EnclaveReport{Raw: b}
	copy(r.CPUSVN[:], b[0:16])
	r.MiscSelect = binary.LittleEndian.Uint32(b[16:20])
	copy(r.Attributes[:], b[48:64])
	copy(r.MRENCLAVE[:], b[64:96])
	copy(r.MRSIGNER[:], b[128:160])
	r.ISVProdID = binary.LittleEndian.Uint16(b[256:258])
	r.ISVSVN = binary.LittleEndian.Uint16(b[258:260])
	copy(r.ReportData[:], b[320:384])
	return r
}

func parseTDReport(b []byte) *TDReport {
	if b == nil {
		return nil
	}
	r := &TDReport{Raw: b}
	copy(r.TEETCBSVN[:], b[0:16])
	copy(r.MRSEAM[:], b[16:64])
	copy(r.MRSIGNERSEAM[:], b[64:112])
	copy(r.SEAMAttributes[:], b[112:120])
	copy(r.TDAttributes[:], b[120:128])
	copy(r.XFAM[:], b[128:136])
	copy(r.MRTD[:], b[136:184])
	copy(r.MRCONFIGID[:], b[184:232])
	copy(r.MROWNER[:], b[232:280])
	copy(r.MROWNERCONFIG[:], b[280:328])
	for i := range 4 {
		copy(r.RTMR[i][:], b[328+48*i:376+48*i])
	}
	copy(r.ReportData[:], b[520:584])
	if len(b) == TD15ReportSize {
		r.TD15 = true
		copy(r.TEETCBSVN2[:], b[584:600])
		copy(r.MRSERVICETD[:], b[600:648])
	}
	return r
}
