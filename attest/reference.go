package attest

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// ReferenceValues are what a relying party expects of verified Claims.
// The zero value accepts any measurement and TCB (with warnings) but still
// refuses debug isolates.
type ReferenceValues struct {
	// Measurements is an allow-list for Claims.Measurement; empty means any.
	Measurements [][]byte
	// MinSVN sets a floor per security-version component present in
	// Claims.SVN (e.g. "tee_tcb_svn0", "pce_svn", "snp").
	MinSVN map[string]uint64
	// AcceptTCBStatus lists the acceptable TCB statuses; empty means
	// anything except "Revoked".
	AcceptTCBStatus []string
	// AllowDebug accepts debug isolates.
	AllowDebug bool
	// ReportData, if set, must equal Claims.ReportData (shorter values are
	// compared against the prefix, the rest must be zero).
	ReportData []byte
	// Nonce, if set, must equal Claims.Nonce.
	Nonce []byte
	// MaxAge, if set, bounds now - Claims.IssuedAt for formats with a
	// timestamp; evidence without one is refused when MaxAge is set.
	MaxAge time.Duration
	// RequireHardware refuses classes without hardware protection.
	RequireHardware bool
	// MaxVMPL, if set, refuses SEV-SNP reports asked for at a higher
	// (less privileged) VMPL, and evidence that carries no VMPL at all:
	// 0 means the report must come from the most privileged software in
	// the VM, with nothing beneath it that could watch or alter it.
	MaxVMPL *uint32
	// PCRs, if set, are accepted sets of TPM PCR values (index → digest in
	// the quoted bank): the evidence's PCRs must equal every value of at
	// least one set. PCRs 0–7 pinned this way judge the boot chain —
	// firmware, its configuration, the boot loader (PC Client profile).
	PCRs []map[int][]byte
}

// Validate judges verified claims against reference values as of now.
// It returns the first violation, wrapped around one of the package's
// sentinel errors.
func Validate(c *Claims, ref ReferenceValues, now time.Time) error {
	if c == nil {
		return fmt.Errorf("%w: no claims", ErrMalformed)
	}
	if c.Debug && !ref.AllowDebug {
		return fmt.Errorf("%w: %s evidence comes from a debug-enabled isolate", ErrDebug, c.Class)
	}
	if ref.RequireHardware && !c.HardwareProtected {
		return fmt.Errorf("%w: class %s has no hardware protection and the reference values require it", ErrTCB, c.Class)
	}
	if ref.MaxVMPL != nil {
		if c.VMPL == nil {
			return fmt.Errorf("%w: %s evidence carries no VMPL and the reference values require VMPL %d or lower", ErrTCB, c.Class, *ref.MaxVMPL)
		}
		if *c.VMPL > *ref.MaxVMPL {
			return fmt.Errorf("%w: the report was asked for at VMPL %d; at most VMPL %d is accepted (software at a lower VMPL could watch or alter this one)", ErrTCB, *c.VMPL, *ref.MaxVMPL)
		}
	}
	if len(ref.PCRs) > 0 {
		if err := pcrsMatch(c, ref.PCRs); err != nil {
			return err
		}
	}
	if len(ref.Measurements) > 0 && !slices.ContainsFunc(ref.Measurements, func(m []byte) bool { return bytes.Equal(m, c.Measurement) }) {
		return fmt.Errorf("%w: %s is not in the allow-list", ErrMeasurement, hex.EncodeToString(c.Measurement))
	}
	if ref.ReportData != nil && !reportDataMatches(c.ReportData, ref.ReportData) {
		return fmt.Errorf("%w: evidence has %s, expected %s", ErrReportData, shortHex(c.ReportData), shortHex(ref.ReportData))
	}
	if ref.Nonce != nil && !bytes.Equal(c.Nonce, ref.Nonce) {
		return fmt.Errorf("%w: evidence has %s, expected %s", ErrNonce, shortHex(c.Nonce), shortHex(ref.Nonce))
	}
	if len(ref.AcceptTCBStatus) > 0 {
		if !slices.Contains(ref.AcceptTCBStatus, c.TCBStatus) {
			return fmt.Errorf("%w: status %q not in %v", ErrTCB, c.TCBStatus, ref.AcceptTCBStatus)
		}
	} else if c.TCBStatus == "Revoked" {
		return fmt.Errorf("%w: platform TCB is revoked", ErrTCB)
	}
	for comp, min := range ref.MinSVN {
		got, ok := c.SVN[comp]
		if !ok {
			return fmt.Errorf("%w: evidence has no SVN component %q", ErrTCB, comp)
		}
		if got < min {
			return fmt.Errorf("%w: SVN %s is %d, minimum %d", ErrTCB, comp, got, min)
		}
	}
	if ref.MaxAge > 0 {
		if c.IssuedAt.IsZero() {
			return fmt.Errorf("%w: %s evidence carries no timestamp and a maximum age is required", ErrStale, c.Class)
		}
		if age := now.Sub(c.IssuedAt); age > ref.MaxAge {
			return fmt.Errorf("%w: issued %s ago, maximum %s", ErrStale, age.Round(time.Second), ref.MaxAge)
		}
	}
	return nil
}

// pcrsMatch accepts claims whose PCRs equal one of the sets, and otherwise
// names the first difference from the set that came closest.
func pcrsMatch(c *Claims, sets []map[int][]byte) error {
	best, bestErr := -1, error(nil)
	for _, set := range sets {
		idx := slices.Sorted(maps.Keys(set))
		matched := 0
		var firstErr error
		for _, i := range idx {
			got, ok := c.Measurements["pcr"+strconv.Itoa(i)]
			switch {
			case !ok:
				firstErr = cmp.Or(firstErr, fmt.Errorf("%w: the %s evidence does not cover PCR %d, which the reference values pin", ErrMeasurement, c.Class, i))
			case !bytes.Equal(got, set[i]):
				firstErr = cmp.Or(firstErr, fmt.Errorf("%w: PCR %d is %s, the reference values pin %s", ErrMeasurement, i, shortHex(got), shortHex(set[i])))
			default:
				matched++
			}
		}
		if firstErr == nil {
			return nil
		}
		if matched > best {
			best, bestErr = matched, firstErr
		}
	}
	if len(sets) > 1 {
		return fmt.Errorf("%w (no set of the %d accepted matches; this is the closest)", bestErr, len(sets))
	}
	return bestErr
}

func reportDataMatches(got, want []byte) bool {
	if len(want) > len(got) {
		return false
	}
	if !bytes.Equal(got[:len(want)], want) {
		return false
	}
	for _, b := range got[len(want):] {
		if b != 0 {
			return false
		}
	}
	return true
}

// shortHex keeps error messages readable when a format carries kilobytes
// of user data.
func shortHex(b []byte) string {
	if len(b) > 80 {
		return hex.EncodeToString(b[:80]) + fmt.Sprintf("… (%d bytes)", len(b))
	}
	return hex.EncodeToString(b)
}
