package roots

import (
	"testing"
)

func TestRoots(t *testing.T) {
	for _, tc := range []struct {
		name, cn string
		certs    []string
	}{
		{"milan", "ARK-Milan", []string{AMDMilan()[0].Subject.CommonName, AMDMilan()[1].Subject.CommonName}},
		{"genoa", "ARK-Genoa", []string{AMDGenoa()[0].Subject.CommonName, AMDGenoa()[1].Subject.CommonName}},
	} {
		if tc.certs[1] != tc.cn {
			t.Errorf("%s: ARK is %q", tc.name, tc.certs[1])
		}
	}
	if err := AMDMilan()[0].CheckSignatureFrom(AMDMilan()[1]); err != nil {
		t.Errorf("Milan ASK not signed by ARK: %v", err)
	}
	if err := AMDGenoa()[0].CheckSignatureFrom(AMDGenoa()[1]); err != nil {
		t.Errorf("Genoa ASK not signed by ARK: %v", err)
	}
	if cn := IntelSGXRoot().Subject.CommonName; cn != "Intel SGX Root CA" {
		t.Errorf("Intel root CN %q", cn)
	}
	if cn := AWSNitroRoot().Subject.CommonName; cn != "aws.nitro-enclaves" {
		t.Errorf("AWS root CN %q", cn)
	}
	for _, c := range append(AMDMilan()[1:], AMDGenoa()[1], IntelSGXRoot(), AWSNitroRoot()) {
		if err := c.CheckSignatureFrom(c); err != nil {
			t.Errorf("%s is not self-signed: %v", c.Subject.CommonName, err)
		}
	}
}

func TestFingerprintRefusesOtherCert(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a certificate with the wrong fingerprint was accepted")
		}
	}()
	mustParseFingerprint("intel", intelSGXRootPEM, AWSNitroRootSHA256)
}
