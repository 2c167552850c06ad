package roots

import (
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"fmt"
)

var (
	//go:embed amd_milan.pem
	amdMilanPEM []byte
	//go:embed amd_genoa.pem
	amdGenoaPEM []byte
	//go:embed intel_sgx_root.pem
	intelSGXRootPEM []byte
	//go:embed aws_nitro_root.pem
	awsNitroRootPEM []byte
)

// AWSNitroRootSHA256 is the SHA-256 fingerprint of the AWS Nitro Enclaves
// Root G1 certificate, as AWS publishes it.
const AWSNitroRootSHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

var (
	amdMilan     = mustParse("amd_milan.pem", amdMilanPEM, 2)
	amdGenoa     = mustParse("amd_genoa.pem", amdGenoaPEM, 2)
	intelSGXRoot = mustParse("intel_sgx_root.pem", intelSGXRootPEM, 1)
	awsNitroRoot = mustParseFingerprint("aws_nitro_root.pem", awsNitroRootPEM, AWSNitroRootSHA256)
)

// AMDMilan returns the Milan ASK and ARK, in that order.
func AMDMilan() []*x509.Certificate { return clone(amdMilan) }

// AMDGenoa returns the Genoa ASK and ARK, in that order.
func AMDGenoa() []*x509.Certificate { return clone(amdGenoa) }

// IntelSGXRoot returns the Intel SGX Root CA certificate.
func IntelSGXRoot() *x509.Certificate { return intelSGXRoot[0] }

// AWSNitroRoot returns the AWS Nitro Enclaves Root G1 certificate.
func AWSNitroRoot() *x509.Certificate { return awsNitroRoot[0] }

// AMDMilanPEM, AMDGenoaPEM, IntelSGXRootPEM and AWSNitroRootPEM return the
// embedded files, for libraries that take PEM.
func AMDMilanPEM() []byte     { return append([]byte(nil), amdMilanPEM...) }
func AMDGenoaPEM() []byte     { return append([]byte(nil), amdGenoaPEM...) }
func IntelSGXRootPEM() []byte { return append([]byte(nil), intelSGXRootPEM...) }
func AWSNitroRootPEM() []byte { return append([]byte(nil), awsNitroRootPEM...) }

func clone(in []*x509.Certificate) []*x509.Certificate {
	return append([]*x509.Certificate(nil), in...)
}

// mustParse panics on a malformed embedded file: that is a broken build,
// not bad input.
func mustParse(name string, data []byte, want int) []*x509.Certificate {
	var out []*x509.Certificate
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			panic(fmt.Sprintf("roots: %s: %v", name, err))
		}
		out = append(out, c)
	}
	if len(out) != want {
		panic(fmt.Sprintf("roots: %s holds %d certificates, want %d", name, len(out), want))
	}
	return out
}

func mustParseFingerprint(name string, data []byte, fp string) []*x509.Certificate {
	c := mustParse(name, data, 1)
	sum := sha256.Sum256(c[0].Raw)
	if hex.EncodeToString(sum[:]) != fp {
		panic(fmt.Sprintf("roots: %s has fingerprint %x, want %s", name, sum, fp))
	}
	return c
}
