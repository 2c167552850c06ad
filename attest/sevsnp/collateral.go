package sevsnp

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
)

// collateral is Evidence.Collateral sorted by role.
type collateral struct {
	endorsement []*x509.Certificate // VCEK or VLEK
	ask         []*x509.Certificate // ASK and ASVK
	ark         []*x509.Certificate
	crls        []*x509.RevocationList
}

// parseCollateral classifies each collateral element as certificates or a
// CRL, in PEM or DER.
func parseCollateral(items [][]byte) (*collateral, error) {
	c := &collateral{}
	for i, item := range items {
		if err := c.add(item); err != nil {
			return nil, fmt.Errorf("collateral item %d: %w", i, err)
		}
	}
	return c, nil
}

func (c *collateral) add(item []byte) error {
	trimmed := bytes.TrimSpace(item)
	if bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		rest := trimmed
		n := 0
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			n++
			switch block.Type {
			case "CERTIFICATE":
				cert, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return fmt.Errorf("PEM certificate %d: %v", n, err)
				}
				c.addCert(cert)
			case "X509 CRL":
				crl, err := x509.ParseRevocationList(block.Bytes)
				if err != nil {
					return fmt.Errorf("PEM CRL %d: %v", n, err)
				}
				c.crls = append(c.crls, crl)
			default:
				return fmt.Errorf("PEM block %d has type %q, want CERTIFICATE or X509 CRL", n, block.Type)
			}
		}
		if n == 0 || len(bytes.TrimSpace(rest)) != 0 {
			return fmt.Errorf("not a well-formed PEM sequence")
		}
		return nil
	}
	if cert, err := x509.ParseCertificate(item); err == nil {
		c.addCert(cert)
		return nil
	}
	if crl, err := x509.ParseRevocationList(item); err == nil {
		c.crls = append(c.crls, crl)
		return nil
	}
	return fmt.Errorf("neither a certificate nor a CRL (PEM or DER)")
}

func (c *collateral) addCert(cert *x509.Certificate) {
	cn := cert.Subject.CommonName
	switch {
	case cn == "SEV-VCEK" || cn == "SEV-VLEK":
		c.endorsement = append(c.endorsement, cert)
	case strings.HasPrefix(cn, "ARK-"):
		c.ark = append(c.ark, cert)
	case strings.HasPrefix(cn, "SEV-"):
		c.ask = append(c.ask, cert)
	default:
		// Unknown certificates are kept as possible intermediates; the
		// chain check decides whether they matter.
		c.ask = append(c.ask, cert)
	}
}

// productLineOf returns "Milan" for "ARK-Milan", "SEV-Milan" or
// "SEV-VLEK-Milan".
func productLineOf(cert *x509.Certificate) string {
	cn := cert.Subject.CommonName
	for _, p := range []string{"ARK-", "SEV-VLEK-", "SEV-"} {
		if strings.HasPrefix(cn, p) {
			return strings.TrimPrefix(cn, p)
		}
	}
	return ""
}
