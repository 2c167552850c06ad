package main

import (
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/examples/internal/guesttest"
)

func TestSample(t *testing.T) {
	root := guesttest.Root(t, map[string][]byte{DataInput: guesttest.Testdata(t, "input/data.csv")})
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if got, want := guesttest.Output(t, root, "linreg.json"), guesttest.Testdata(t, "output/linreg.json"); string(got) != string(want) {
		t.Fatalf("linreg.json = %s, want %s", got, want)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestFit(t *testing.T) {
	// Reference values from Python's statistics.linear_regression and
	// statistics.correlation on the sample data.
	f, err := FitCSV(strings.NewReader(string(guesttest.Testdata(t, "input/data.csv"))))
	if err != nil {
		t.Fatal(err)
	}
	if f.N != 10 || !near(f.Slope, 5.532894736842104) || !near(f.Intercept, 45.60855263157896) || !near(f.R2, 0.9904564652371668) {
		t.Fatalf("fit = %+v", f)
	}
	// An exact line, no header, CRLF, blank lines.
	f, err = FitCSV(strings.NewReader("0,1\r\n\r\n1,3\r\n2,5\r\n"))
	if err != nil || f != (Fit{N: 3, Slope: 2, Intercept: 1, R2: 1}) {
		t.Fatalf("exact fit = %+v, %v", f, err)
	}
	// Flat y: slope 0, a perfect fit.
	f, err = FitCSV(strings.NewReader("1,7\n2,7\n3,7\n"))
	if err != nil || f != (Fit{N: 3, Slope: 0, Intercept: 7, R2: 1}) {
		t.Fatalf("flat fit = %+v, %v", f, err)
	}
}

// Large offsets destroy the naive Σx² formula; the streaming co-moments keep
// the answer exact here.
func TestFitLargeOffset(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		x := 1e9 + float64(i)
		b.WriteString(strings.Join([]string{ftoa(x), ftoa(3*float64(i) - 4)}, ",") + "\n")
	}
	f, err := FitCSV(strings.NewReader(b.String()))
	if err != nil || !near(f.Slope, 3) || !near(f.Intercept, -4-3e9) || !near(f.R2, 1) {
		t.Fatalf("fit = %+v, %v", f, err)
	}
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func TestFitRejects(t *testing.T) {
	cases := map[string]string{
		"":                         "0 points",
		"x,y\n1,2\n":               "1 points",
		"1,2\n1,5\n":               "vertical",
		"1,2\n2,NaN\n":             `line 2: "NaN" is not a finite`,
		"1,2\n2,1e999\n":           `line 2: "1e999" is not a finite`,
		"1,2\n2\n":                 `line 2: want "x,y"`,
		"1,2\n2,3,4\n":             `line 2: want "x,y"`,
		"a,b\nc,d\n":               `line 2: "c" is not a finite`,
		"1,1e308\n2,-1e308\n":      "overflows",
		strings.Repeat("9", 70000): "token too long",
	}
	for in, want := range cases {
		_, err := FitCSV(strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("FitCSV(%.30q) = %v, want error containing %q", in, err, want)
		}
	}
}

func FuzzFitCSV(f *testing.F) {
	f.Add("x,y\n1,2\n2,4\n3,7\n")
	f.Add("1e300,1\n-1e300,2\n")
	f.Fuzz(func(t *testing.T, in string) {
		fit, err := FitCSV(strings.NewReader(in))
		if err != nil {
			return
		}
		if fit.N < 2 || math.IsNaN(fit.Slope) || math.IsNaN(fit.Intercept) || fit.R2 < 0 || fit.R2 > 1+1e-9 {
			t.Fatalf("FitCSV(%q) = %+v", in, fit)
		}
	})
}
