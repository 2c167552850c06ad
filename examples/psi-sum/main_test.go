package main

import (
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/examples/internal/guesttest"
)

func TestSampleInputs(t *testing.T) {
	root := guesttest.Root(t, map[string][]byte{
		CustomersInput: guesttest.Testdata(t, "input/customers.csv"),
		PurchasesInput: guesttest.Testdata(t, "input/purchases.csv"),
	})
	if err := run(); err != nil {
		t.Fatal(err)
	}
	got := guesttest.Output(t, root, ResultOutput)
	if want := guesttest.Testdata(t, "output/result.json"); string(got) != string(want) {
		t.Fatalf("result.json = %q, want %q", got, want)
	}
}

func TestCompute(t *testing.T) {
	cases := []struct {
		name, customers, purchases string
		want                       Result
	}{
		{"empty", "", "", Result{0, 0}},
		{"headers only", "id\n", "id,amount\n", Result{0, 0}},
		{"no headers, CRLF, blanks", "a\r\n\r\nb\r\n", "a,5\r\nb,7\r\n\nc,100\r\n", Result{2, 12}},
		{"duplicate customers count once", "a\na\n", "a,1\na,2\n", Result{1, 3}},
		{"spaces trimmed", " a \n", "a , 4\n", Result{1, 4}},
		{"header with spaces", "ID\nX\n", "Id, Amount\nX,3\n", Result{1, 3}},
		{"refund", "a\n", "a,10\na,-10\n", Result{1, 0}},
		{"no intersection", "a\n", "b,1\n", Result{0, 0}},
		{"header only skipped on line 1", "a\nid\n", "id,1\n", Result{1, 1}},
	}
	for _, c := range cases {
		got, err := Compute(strings.NewReader(c.customers), strings.NewReader(c.purchases))
		if err != nil || got != c.want {
			t.Errorf("%s: Compute = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}
}

func TestComputeRejects(t *testing.T) {
	cases := []struct {
		customers, purchases, want string
	}{
		{"a\n,\n", "", `"customers.csv" line 2: id "," contains a comma`},
		{"a\n", "a\n", `"purchases.csv" line 1: want "id,amount"`},
		{"a\n", "a,1.50\n", `"purchases.csv" line 1: amount "1.50" is not an integer`},
		{"a\n", ",3\n", `"purchases.csv" line 1: empty id`},
		{"\"a\"\n", "", `contains a comma or a double quote`},
		{strings.Repeat("x", MaxIDLen+1), "", "longer than 128"},
		{"a\n", "a,9223372036854775807\na,1\n", `line 2: sum overflows`},
		{"a\n", "a,-9223372036854775808\na,-1\n", `line 2: sum overflows`},
		{strings.Repeat("y", 70<<10), "", `"customers.csv": bufio.Scanner: token too long`},
	}
	for _, c := range cases {
		_, err := Compute(strings.NewReader(c.customers), strings.NewReader(c.purchases))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Compute(%.20q, %.20q) = %v, want error containing %s", c.customers, c.purchases, err, c.want)
		}
	}
}

func TestMissingInput(t *testing.T) {
	guesttest.Root(t, map[string][]byte{CustomersInput: []byte("a\n")})
	if err := run(); err == nil || !strings.Contains(err.Error(), `input "purchases.csv"`) {
		t.Fatalf("run without purchases = %v", err)
	}
}

func FuzzCompute(f *testing.F) {
	f.Add("id\na\nb\n", "id,amount\na,1\nc,2\n")
	f.Add("a\r\n", "a,-5\r\n")
	f.Fuzz(func(t *testing.T, customers, purchases string) {
		res, err := Compute(strings.NewReader(customers), strings.NewReader(purchases))
		if err != nil {
			return
		}
		if res.IntersectionSize < 0 || res.IntersectionSize > strings.Count(customers, "\n")+1 {
			t.Fatalf("intersection size %d from %q", res.IntersectionSize, customers)
		}
	})
}
