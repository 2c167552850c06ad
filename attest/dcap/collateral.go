package dcap

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Collateral is what Intel's PCS (or a PCCS cache) serves for one quote:
// CRLs, TCB info and QE identity, each with the certificate chain that
// signed it. Its JSON form is the one the dcap-qvl verifier uses (see
// ParseCollateralJSON).
type Collateral struct {
	PCKCRLIssuerChain     []*x509.Certificate
	RootCACRL             *x509.RevocationList
	PCKCRL                *x509.RevocationList
	TCBInfoIssuerChain    []*x509.Certificate
	TCBInfoRaw            []byte // the exact signed bytes
	TCBInfoSignature      []byte // 64-byte r||s
	QEIdentityIssuerChain []*x509.Certificate
	QEIdentityRaw         []byte
	QEIdentitySignature   []byte

	TCBInfo    *TCBInfo
	QEIdentity *QEIdentity
}

// collateralJSON is the dcap-qvl QuoteCollateralV3 JSON shape: PEM chains
// and JSON bodies as strings, CRLs and signatures as hex strings.
type collateralJSON struct {
	PCKCRLIssuerChain     *string `json:"pck_crl_issuer_chain"`
	RootCACRL             *string `json:"root_ca_crl"`
	PCKCRL                *string `json:"pck_crl"`
	TCBInfoIssuerChain    *string `json:"tcb_info_issuer_chain"`
	TCBInfo               *string `json:"tcb_info"`
	TCBInfoSignature      *string `json:"tcb_info_signature"`
	QEIdentityIssuerChain *string `json:"qe_identity_issuer_chain"`
	QEIdentity            *string `json:"qe_identity"`
	QEIdentitySignature   *string `json:"qe_identity_signature"`
}

// IsCollateralJSON reports whether b looks like collateral JSON (an object
// with a "tcb_info" member), without validating it.
func IsCollateralJSON(b []byte) bool {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return false
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(t, &probe) != nil {
		return false
	}
	_, ok := probe["tcb_info"]
	return ok
}

// ParseCollateralJSON parses collateral in dcap-qvl's JSON shape:
//
//	{"pck_crl_issuer_chain": PEM, "root_ca_crl": hex DER, "pck_crl": hex DER,
//	 "tcb_info_issuer_chain": PEM, "tcb_info": JSON text, "tcb_info_signature": hex r||s,
//	 "qe_identity_issuer_chain": PEM, "qe_identity": JSON text, "qe_identity_signature": hex r||s}
//
// Every member is required. Nothing is verified here.
func ParseCollateralJSON(b []byte) (*Collateral, error) {
	if len(b) > maxQuote {
		return nil, fmt.Errorf("%w: collateral is %d bytes, limit %d", ErrFormat, len(b), maxQuote)
	}
	var j collateralJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: collateral JSON: %v", ErrFormat, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: collateral JSON: trailing data", ErrFormat)
	}
	c := &Collateral{}
	var err error
	field := func(name string, v *string) (string, error) {
		if v == nil {
			return "", fmt.Errorf("%w: collateral JSON lacks %q", ErrFormat, name)
		}
		return *v, nil
	}
	chain := func(name string, v *string) ([]*x509.Certificate, error) {
		s, err := field(name, v)
		if err != nil {
			return nil, err
		}
		certs, err := parsePEMChain([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("%w: collateral %s: %v", ErrFormat, name, err)
		}
		return certs, nil
	}
	hexField := func(name string, v *string) ([]byte, error) {
		s, err := field(name, v)
		if err != nil {
			return nil, err
		}
		out, err := hex.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%w: collateral %s is not hex: %v", ErrFormat, name, err)
		}
		return out, nil
	}
	crl := func(name string, v *string) (*x509.RevocationList, error) {
		der, err := hexField(name, v)
		if err != nil {
			return nil, err
		}
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("%w: collateral %s: %v", ErrFormat, name, err)
		}
		return l, nil
	}
	if c.PCKCRLIssuerChain, err = chain("pck_crl_issuer_chain", j.PCKCRLIssuerChain); err != nil {
		return nil, err
	}
	if c.TCBInfoIssuerChain, err = chain("tcb_info_issuer_chain", j.TCBInfoIssuerChain); err != nil {
		return nil, err
	}
	if c.QEIdentityIssuerChain, err = chain("qe_identity_issuer_chain", j.QEIdentityIssuerChain); err != nil {
		return nil, err
	}
	if c.RootCACRL, err = crl("root_ca_crl", j.RootCACRL); err != nil {
		return nil, err
	}
	if c.PCKCRL, err = crl("pck_crl", j.PCKCRL); err != nil {
		return nil, err
	}
	if c.TCBInfoSignature, err = hexField("tcb_info_signature", j.TCBInfoSignature); err != nil {
		return nil, err
	}
	if c.QEIdentitySignature, err = hexField("qe_identity_signature", j.QEIdentitySignature); err != nil {
		return nil, err
	}
	s, err := field("tcb_info", j.TCBInfo)
	if err != nil {
		return nil, err
	}
	c.TCBInfoRaw = []byte(s)
	if s, err = field("qe_identity", j.QEIdentity); err != nil {
		return nil, err
	}
	c.QEIdentityRaw = []byte(s)
	if c.TCBInfo, err = ParseTCBInfo(c.TCBInfoRaw); err != nil {
		return nil, err
	}
	if c.QEIdentity, err = ParseQEIdentity(c.QEIdentityRaw); err != nil {
		return nil, err
	}
	return c, nil
}

// TCBInfo is Intel's TCB information for one FMSPC (SGX v2/v3 or TDX v3).
type TCBInfo struct {
	ID                      string          `json:"id"`
	Version                 int             `json:"version"`
	IssueDate               time.Time       `json:"issueDate"`
	NextUpdate              time.Time       `json:"nextUpdate"`
	FMSPC                   string          `json:"fmspc"`
	PCEID                   string          `json:"pceId"`
	TCBType                 int             `json:"tcbType"`
	TCBEvaluationDataNumber int             `json:"tcbEvaluationDataNumber"`
	TDXModule               *TDXModule      `json:"tdxModule"`
	TDXModuleIdentities     []TDXModuleID   `json:"tdxModuleIdentities"`
	TCBLevels               []PlatformLevel `json:"tcbLevels"`
}

// TDXModule is the expected identity of the TDX module (SEAM).
type TDXModule struct {
	MRSIGNER       HexBytes `json:"mrsigner"`
	Attributes     HexBytes `json:"attributes"`
	AttributesMask HexBytes `json:"attributesMask"`
}

// TDXModuleID is one TDX module identity with its own TCB levels.
type TDXModuleID struct {
	ID string `json:"id"`
	TDXModule
	TCBLevels []IdentityLevel `json:"tcbLevels"`
}

// PlatformLevel is one TCB level of a TCB info.
type PlatformLevel struct {
	TCB struct {
		SGXComponents []struct {
			SVN int `json:"svn"`
		} `json:"sgxtcbcomponents"`
		TDXComponents []struct {
			SVN int `json:"svn"`
		} `json:"tdxtcbcomponents"`
		PCESVN int `json:"pcesvn"`
	} `json:"tcb"`
	TCBDate     time.Time `json:"tcbDate"`
	TCBStatus   string    `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
}

// IdentityLevel is one TCB level of a QE or TDX module identity.
type IdentityLevel struct {
	TCB struct {
		ISVSVN int `json:"isvsvn"`
	} `json:"tcb"`
	TCBDate     time.Time `json:"tcbDate"`
	TCBStatus   string    `json:"tcbStatus"`
	AdvisoryIDs []string  `json:"advisoryIDs"`
}

// QEIdentity is Intel's identity of the quoting enclave (QE or TD_QE).
type QEIdentity struct {
	ID                      string          `json:"id"`
	Version                 int             `json:"version"`
	IssueDate               time.Time       `json:"issueDate"`
	NextUpdate              time.Time       `json:"nextUpdate"`
	TCBEvaluationDataNumber int             `json:"tcbEvaluationDataNumber"`
	MiscSelect              HexBytes        `json:"miscselect"`
	MiscSelectMask          HexBytes        `json:"miscselectMask"`
	Attributes              HexBytes        `json:"attributes"`
	AttributesMask          HexBytes        `json:"attributesMask"`
	MRSIGNER                HexBytes        `json:"mrsigner"`
	ISVProdID               int             `json:"isvprodid"`
	TCBLevels               []IdentityLevel `json:"tcbLevels"`
}

// HexBytes is a JSON string of hex digits.
type HexBytes []byte

// UnmarshalJSON decodes a hex string.
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	out, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not hex: %q", s)
	}
	*h = out
	return nil
}

// ParseTCBInfo parses the TCB info body (the signed JSON text, without the
// {"tcbInfo":..., "signature":...} envelope) and checks its shape.
func ParseTCBInfo(b []byte) (*TCBInfo, error) {
	var t TCBInfo
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%w: TCB info: %v", ErrFormat, err)
	}
	if t.ID == "" {
		// TCB info v2 (SGX) has no id.
		t.ID = "SGX"
	}
	if t.ID != "SGX" && t.ID != "TDX" {
		return nil, fmt.Errorf("%w: TCB info id %q", ErrFormat, t.ID)
	}
	if t.Version == 2 {
		if err := t.fillV2(b); err != nil {
			return nil, err
		}
	} else if t.Version != 3 {
		return nil, fmt.Errorf("%w: TCB info version %d, want 2 or 3", ErrFormat, t.Version)
	}
	if len(t.TCBLevels) == 0 {
		return nil, fmt.Errorf("%w: TCB info has no TCB levels", ErrFormat)
	}
	if f, err := hex.DecodeString(t.FMSPC); err != nil || len(f) != 6 {
		return nil, fmt.Errorf("%w: TCB info FMSPC %q", ErrFormat, t.FMSPC)
	}
	if p, err := hex.DecodeString(t.PCEID); err != nil || len(p) != 2 {
		return nil, fmt.Errorf("%w: TCB info PCE ID %q", ErrFormat, t.PCEID)
	}
	for i, l := range t.TCBLevels {
		if len(l.TCB.SGXComponents) != 16 {
			return nil, fmt.Errorf("%w: TCB level %d has %d SGX components, want 16", ErrFormat, i, len(l.TCB.SGXComponents))
		}
		if t.ID == "TDX" && len(l.TCB.TDXComponents) != 16 {
			return nil, fmt.Errorf("%w: TDX TCB level %d has %d TDX components, want 16", ErrFormat, i, len(l.TCB.TDXComponents))
		}
		if l.TCBStatus == "" {
			return nil, fmt.Errorf("%w: TCB level %d has no status", ErrFormat, i)
		}
	}
	if t.IssueDate.IsZero() || t.NextUpdate.IsZero() {
		return nil, fmt.Errorf("%w: TCB info lacks issueDate or nextUpdate", ErrFormat)
	}
	return &t, nil
}

// fillV2 converts v2 levels ("sgxtcbcomp01svn".."sgxtcbcomp16svn") to
// the v3 component list.
func (t *TCBInfo) fillV2(b []byte) error {
	var v2 struct {
		TCBLevels []struct {
			TCB map[string]int `json:"tcb"`
		} `json:"tcbLevels"`
	}
	if err := json.Unmarshal(b, &v2); err != nil {
		return fmt.Errorf("%w: TCB info v2: %v", ErrFormat, err)
	}
	for i := range t.TCBLevels {
		comps := t.TCBLevels[i].TCB.SGXComponents[:0]
		for n := 1; n <= 16; n++ {
			svn, ok := v2.TCBLevels[i].TCB[fmt.Sprintf("sgxtcbcomp%02dsvn", n)]
			if !ok {
				return fmt.Errorf("%w: TCB info v2 level %d lacks component %d", ErrFormat, i, n)
			}
			comps = append(comps, struct {
				SVN int `json:"svn"`
			}{svn})
		}
		t.TCBLevels[i].TCB.SGXComponents = comps
	}
	return nil
}

// ParseQEIdentity parses a QE identity body and checks its shape.
func ParseQEIdentity(b []byte) (*QEIdentity, error) {
	var q QEIdentity
	if err := json.Unmarshal(b, &q); err != nil {
		return nil, fmt.Errorf("%w: QE identity: %v", ErrFormat, err)
	}
	if q.ID != "QE" && q.ID != "TD_QE" && q.ID != "QVE" {
		return nil, fmt.Errorf("%w: QE identity id %q", ErrFormat, q.ID)
	}
	if len(q.MRSIGNER) != 32 || len(q.Attributes) != 16 || len(q.AttributesMask) != 16 || len(q.MiscSelect) != 4 || len(q.MiscSelectMask) != 4 {
		return nil, fmt.Errorf("%w: QE identity field sizes (mrsigner %d, attributes %d/%d, miscselect %d/%d)", ErrFormat,
			len(q.MRSIGNER), len(q.Attributes), len(q.AttributesMask), len(q.MiscSelect), len(q.MiscSelectMask))
	}
	if len(q.TCBLevels) == 0 {
		return nil, fmt.Errorf("%w: QE identity has no TCB levels", ErrFormat)
	}
	if q.IssueDate.IsZero() || q.NextUpdate.IsZero() {
		return nil, fmt.Errorf("%w: QE identity lacks issueDate or nextUpdate", ErrFormat)
	}
	return &q, nil
}
