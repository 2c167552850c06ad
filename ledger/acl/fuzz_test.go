package acl

import (
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzDecode feeds every body decoder arbitrary bytes: none panics, and a
// body one accepts encodes and decodes again to the same value, which
// passes the same checks.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","plaintext_sha256":"0000000000000000000000000000000000000000000000000000000000000000","brokers":["ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],"threshold":1,"commitment":["0000000000000000000000000000000000000000000000000000000000000000"]}`))
	f.Add([]byte(`{"artifact":"sha256:0000000000000000000000000000000000000000000000000000000000000000","owner":"ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=","grantee":{"class":"software","measurements":["ab"]},"not_after":"2027-01-01T00:00:00Z","max_uses":1}`))
	f.Add([]byte(`{"grant":3}`))
	f.Add([]byte(`{"artifact":"sha256:00","delegate":"x","not_after":"","limits":{"max_duration_seconds":1,"max_uses":1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		roundTrip(t, b, DecodeArtifact)
		roundTrip(t, b, DecodeGrant)
		roundTrip(t, b, DecodeDelegation)
		roundTrip(t, b, DecodeRelease)
		roundTrip(t, b, DecodeRevocation)
	})
}

func roundTrip[T any](t *testing.T, b []byte, dec func([]byte) (*T, error)) {
	v, err := dec(b)
	if err != nil {
		return
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	w, err := dec(again)
	if err != nil || !reflect.DeepEqual(v, w) {
		t.Fatalf("%s decoded to %+v, encoded %s, decoded again %+v (%v)", b, v, again, w, err)
	}
}
