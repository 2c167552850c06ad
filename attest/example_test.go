package attest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
)

// Verify, then Validate: the verifier establishes what the evidence says
// (signatures and chains), the reference values judge whether that is
// acceptable — here the software class, whose platform key is pinned.
func Example() {
	platform := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	runtime := [32]byte{1, 2, 3}
	a, err := software.NewAttester(platform, software.WithMeasurement(runtime))
	if err != nil {
		panic(err)
	}
	var reportData [attest.ReportDataSize]byte
	copy(reportData[:], "a fresh nonce and the session's keys")
	ev, err := a.Attest(context.Background(), reportData)
	if err != nil {
		panic(err)
	}

	claims, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{
		TrustedKeys: []crypto.PublicKey{platform.Public()},
	})
	if err != nil {
		panic(err)
	}
	err = attest.Validate(claims, attest.ReferenceValues{
		Measurements: [][]byte{runtime[:]},
		ReportData:   reportData[:],
	}, time.Now())
	fmt.Println(claims.Class, claims.HardwareProtected, err)

	// The same evidence replayed to a verifier expecting other report data.
	err = attest.Validate(claims, attest.ReferenceValues{ReportData: []byte("another session")}, time.Now())
	fmt.Println(errors.Is(err, attest.ErrReportData))
	// Output:
	// software false <nil>
	// true
}
