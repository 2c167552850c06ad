package dcap

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
)

// oidSGXExtensions is Intel's SGX extension in PCK certificates.
var oidSGXExtensions = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}

// PCKExtensions are the platform facts Intel certified in a PCK
// certificate.
type PCKExtensions struct {
	PPID    []byte
	CompSVN [16]uint8 // SGX TCB components 1..16
	PCESVN  uint16
	CPUSVN  []byte
	PCEID   []byte // 2 bytes
	FMSPC   []byte // 6 bytes
	SGXType int
}

type oidValue struct {
	ID    asn1.ObjectIdentifier
	Value asn1.RawValue
}

// ParsePCKExtensions reads the SGX extension of a PCK certificate.
func ParsePCKExtensions(cert *x509.Certificate) (*PCKExtensions, error) {
	var raw []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidSGXExtensions) {
			raw = e.Value
		}
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: PCK certificate %q has no SGX extension %s", ErrFormat, cert.Subject.CommonName, oidSGXExtensions)
	}
	var items []oidValue
	if rest, err := asn1.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("%w: PCK SGX extension: %v", ErrFormat, err)
	} else if len(rest) != 0 {
		return nil, fmt.Errorf("%w: PCK SGX extension: %d bytes after the sequence", ErrFormat, len(rest))
	}
	out := &PCKExtensions{}
	seen := map[int]bool{}
	for _, it := range items {
		if len(it.ID) != len(oidSGXExtensions)+1 || !asn1.ObjectIdentifier(it.ID[:len(oidSGXExtensions)]).Equal(oidSGXExtensions) {
			continue
		}
		n := it.ID[len(oidSGXExtensions)]
		seen[n] = true
		var err error
		switch n {
		case 1:
			out.PPID, err = octets(it.Value)
		case 2:
			err = out.parseTCB(it.Value)
		case 3:
			out.PCEID, err = octets(it.Value)
		case 4:
			out.FMSPC, err = octets(it.Value)
		case 5:
			_, err = asn1.Unmarshal(it.Value.FullBytes, (*asn1.Enumerated)(&out.SGXType))
		}
		if err != nil {
			return nil, fmt.Errorf("%w: PCK SGX extension field %d: %v", ErrFormat, n, err)
		}
	}
	for _, n := range []int{2, 3, 4} {
		if !seen[n] {
			return nil, fmt.Errorf("%w: PCK SGX extension lacks field %d", ErrFormat, n)
		}
	}
	if len(out.FMSPC) != 6 || len(out.PCEID) != 2 {
		return nil, fmt.Errorf("%w: PCK SGX extension FMSPC is %d bytes, PCE ID %d bytes", ErrFormat, len(out.FMSPC), len(out.PCEID))
	}
	return out, nil
}

func octets(v asn1.RawValue) ([]byte, error) {
	var b []byte
	if _, err := asn1.Unmarshal(v.FullBytes, &b); err != nil {
		return nil, err
	}
	return b, nil
}

func (p *PCKExtensions) parseTCB(v asn1.RawValue) error {
	var items []oidValue
	if rest, err := asn1.Unmarshal(v.FullBytes, &items); err != nil {
		return fmt.Errorf("TCB: %v", err)
	} else if len(rest) != 0 {
		return fmt.Errorf("TCB: %d bytes after the sequence", len(rest))
	}
	base := append(append(asn1.ObjectIdentifier{}, oidSGXExtensions...), 2)
	got := 0
	for _, it := range items {
		if len(it.ID) != len(base)+1 || !asn1.ObjectIdentifier(it.ID[:len(base)]).Equal(base) {
			continue
		}
		n := it.ID[len(base)]
		switch {
		case n >= 1 && n <= 16:
			var svn int
			if _, err := asn1.Unmarshal(it.Value.FullBytes, &svn); err != nil || svn < 0 || svn > 255 {
				return fmt.Errorf("TCB component %d: %v (value %d)", n, err, svn)
			}
			p.CompSVN[n-1] = uint8(svn)
			got++
		case n == 17:
			var svn int
			if _, err := asn1.Unmarshal(it.Value.FullBytes, &svn); err != nil || svn < 0 || svn > 0xffff {
				return fmt.Errorf("PCESVN: %v (value %d)", err, svn)
			}
			p.PCESVN = uint16(svn)
			got++
		case n == 18:
			b, err := octets(it.Value)
			if err != nil {
				return fmt.Errorf("CPUSVN: %v", err)
			}
			p.CPUSVN = b
		}
	}
	if got != 17 {
		return fmt.Errorf("TCB has %d of the 16 component SVNs and PCESVN", got)
	}
	return nil
}
