package dcap

import (
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/cloisterhq/cloister/attest"
)

// FindCollateral returns the collateral JSON among Evidence.Collateral
// items, nil if there is none. More than one, or any other kind of item,
// is an error: silently ignoring collateral would hide a mistake.
func FindCollateral(items [][]byte) (*Collateral, error) {
	var out *Collateral
	for i, it := range items {
		if !IsCollateralJSON(it) {
			return nil, fmt.Errorf("%w: collateral item %d is not DCAP collateral JSON (an object with pck_crl, tcb_info, qe_identity, ...)", attest.ErrMalformed, i)
		}
		if out != nil {
			return nil, fmt.Errorf("%w: more than one DCAP collateral JSON given", attest.ErrMalformed)
		}
		c, err := ParseCollateralJSON(it)
		if err != nil {
			return nil, fmt.Errorf("%w: collateral item %d: %v", attest.ErrMalformed, i, err)
		}
		out = c
	}
	return out, nil
}

// VerifyEvidence verifies ev.Data as a DCAP quote with the collateral JSON
// in ev.Collateral (if any), requires the quote's TEE to be tdx or not as
// asked, and refuses debug enclaves and TDs unless opts.AllowDebug.
func VerifyEvidence(ev *attest.Evidence, opts attest.VerifyOptions, wantTDX bool) (*attest.Claims, error) {
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", attest.ErrMalformed)
	}
	col, err := FindCollateral(ev.Collateral)
	if err != nil {
		return nil, err
	}
	return VerifyEvidenceWith(ev.Data, col, opts, wantTDX)
}

// VerifyEvidenceWith is VerifyEvidence with the collateral already parsed
// (nil for none).
func VerifyEvidenceWith(quote []byte, col *Collateral, opts attest.VerifyOptions, wantTDX bool) (*attest.Claims, error) {
	res, err := Verify(quote, col, opts)
	if err != nil {
		return nil, err
	}
	if res.Quote.IsTDX() != wantTDX {
		kind := map[bool]string{true: "TDX", false: "SGX"}
		return nil, fmt.Errorf("%w: this is a %s quote, not %s", attest.ErrMalformed, kind[res.Quote.IsTDX()], kind[wantTDX])
	}
	c := res.Claims()
	if c.Debug && !opts.AllowDebug {
		if res.Quote.IsTDX() {
			return nil, fmt.Errorf("%w: TD attributes %x have DEBUG (bit 0) set: the host can read and change the TD", attest.ErrDebug, res.Quote.TD.TDAttributes)
		}
		return nil, fmt.Errorf("%w: enclave attributes flags 0x%x have DEBUG (bit 1) set: the enclave's memory is readable", attest.ErrDebug, res.Quote.SGX.Flags())
	}
	return c, nil
}

// Claims turns a verified result into attest.Claims. For SGX the primary
// measurement is MRENCLAVE, for TDX it is MRTD.
func (r *Result) Claims() *attest.Claims {
	q := r.Quote
	c := &attest.Claims{
		HardwareProtected: true,
		ReportData:        append([]byte(nil), q.ReportData()...),
		TCBStatus:         r.TCBStatus,
		Advisories:        append([]string{}, r.Advisories...),
		SVN:               map[string]uint64{"pce_svn": uint64(r.PCKExt.PCESVN), "qe_svn": uint64(q.QEReport.ISVSVN)},
		Signer:            r.PCK.Subject.CommonName + " FMSPC " + hex.EncodeToString(r.PCKExt.FMSPC),
		Warnings:          append([]string{}, r.Warnings...),
		Extra: map[string]any{
			"quote_version": q.Version,
			"fmspc":         hex.EncodeToString(r.PCKExt.FMSPC),
			"pce_id":        hex.EncodeToString(r.PCKExt.PCEID),
		},
	}
	for i, v := range r.PCKExt.CompSVN {
		c.SVN["sgx_tcb_comp"+strconv.Itoa(i+1)] = uint64(v)
	}
	if r.Collateral {
		c.Extra["tcb_date"] = r.TCBDate
		c.Extra["platform_tcb_status"] = r.PlatformTCB
		c.Extra["qe_tcb_status"] = r.QETCB
		if r.TDXModuleTCB != "" {
			c.Extra["tdx_module_tcb_status"] = r.TDXModuleTCB
		}
	}
	if q.TD != nil {
		td := q.TD
		c.Class = attest.ClassTDX
		c.Format = fmt.Sprintf("tdx-quote-v%d", q.Version)
		c.Measurement = append([]byte(nil), td.MRTD[:]...)
		c.Measurements = map[string][]byte{
			"mrtd":          td.MRTD[:],
			"rtmr0":         td.RTMR[0][:],
			"rtmr1":         td.RTMR[1][:],
			"rtmr2":         td.RTMR[2][:],
			"rtmr3":         td.RTMR[3][:],
			"mrseam":        td.MRSEAM[:],
			"mrsignerseam":  td.MRSIGNERSEAM[:],
			"mrconfigid":    td.MRCONFIGID[:],
			"mrowner":       td.MROWNER[:],
			"mrownerconfig": td.MROWNERCONFIG[:],
		}
		if td.TD15 {
			c.Measurements["mrservicetd"] = td.MRSERVICETD[:]
		}
		for i, v := range td.TEETCBSVN {
			c.SVN["tee_tcb_svn"+strconv.Itoa(i)] = uint64(v)
		}
		c.Debug = td.Debug()
		c.Extra["td_attributes"] = hex.EncodeToString(td.TDAttributes[:])
		c.Extra["xfam"] = hex.EncodeToString(td.XFAM[:])
		c.Extra["seam_attributes"] = hex.EncodeToString(td.SEAMAttributes[:])
	} else {
		e := q.SGX
		c.Class = attest.ClassSGX
		c.Format = fmt.Sprintf("sgx-quote-v%d", q.Version)
		c.Measurement = append([]byte(nil), e.MRENCLAVE[:]...)
		c.Measurements = map[string][]byte{"mrenclave": e.MRENCLAVE[:], "mrsigner": e.MRSIGNER[:]}
		c.SVN["isv_svn"] = uint64(e.ISVSVN)
		c.SVN["isv_prod_id"] = uint64(e.ISVProdID)
		c.Debug = e.Debug()
		c.Extra["attributes"] = hex.EncodeToString(e.Attributes[:])
		c.Extra["miscselect"] = fmt.Sprintf("0x%08x", e.MiscSelect)
		c.Extra["cpusvn"] = hex.EncodeToString(e.CPUSVN[:])
	}
	return c
}
