package deal

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecode feeds every body decoder arbitrary bytes: none panics, and a
// body one accepts encodes and decodes again to the same encoding, which
// passes the same checks.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"id":"abababababababababababababababababababababababababababababababab","program_sha256":"0101010101010101010101010101010101010101010101010101010101010101","sealed":"sha256:0202020202020202020202020202020202020202020202020202020202020202","requirement":"class == 'software'","inputs":["text"],"deadline":"2027-01-01T00:00:00Z","max_price":"0.01","sealing_key":"x25519:abc"}`))
	f.Add([]byte(`{"request":"abababababababababababababababababababababababababababababababab","token":1,"node":"ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=","session":"00000000000000000000000000000001","policy_hash":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd","policy":{},"class":"software","claims_sha256":"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee","candidates":[{"node":"ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=","offer":3,"price":"0.001","failures":0}],"run_deadline":"2027-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"request":"abababababababababababababababababababababababababababababababab","token":1,"reason":"deadline"}`))
	f.Add([]byte(`{"request":"abababababababababababababababababababababababababababababababab","token":2,"provider":"ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=","class":"software","cpu_ms":0,"wall_ms":9,"observed_wall_ms":12}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		roundTrip(t, b, DecodeRequest)
		roundTrip(t, b, DecodeAssignment)
		roundTrip(t, b, DecodeFailure)
		roundTrip(t, b, DecodeAccount)
		if len(b) < 64 {
			DecimalLess(string(b), "0.5")
			IsDecimal(string(b))
		}
	})
}

func roundTrip[T any](t *testing.T, b []byte, dec func([]byte) (*T, error)) {
	v, err := dec(b)
	if err != nil {
		return
	}
	once, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	w, err := dec(once)
	if err != nil {
		t.Fatalf("%s decoded, encoded as %s, which does not decode: %v", b, once, err)
	}
	twice, _ := json.Marshal(w)
	if !bytes.Equal(once, twice) {
		t.Fatalf("%s: encodings differ: %s and %s", b, once, twice)
	}
}

func TestDecimalLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{{"0.001", "0.01", true}, {"0.01", "0.001", false}, {"1", "1.0", false}, {"1.0", "1", false}, {"009", "10", true},
		{"10", "9.999", false}, {"0.1", "0.10001", true}, {"2", "2", false}} {
		if got := DecimalLess(c.a, c.b); got != c.want {
			t.Errorf("%s < %s: %v", c.a, c.b, got)
		}
	}
}
